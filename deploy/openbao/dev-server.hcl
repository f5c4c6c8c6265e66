# Example config for a local dev server with a file audit device:
#
#   bao server -dev -dev-no-store-token -config=deploy/openbao/dev-server.hcl
#
# OpenBao 2.7 only accepts audit devices declared in config ("use declarative, config-based
# audit device management"); the API cannot enable them. Every request writes a "request" and a
# "response" entry; secrets and tokens in them are HMAC'd, not in clear.
# In tests, vault.keys.openbao_dev.OpenBaoDevServer(audit_log_path=...) writes this stanza.

audit "file" "requests" {
  options {
    file_path = "./openbao-audit.log"
  }
}
