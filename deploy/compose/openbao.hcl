# OpenBao for the compose stack: integrated Raft storage and TLS (dev PKI from secrets-init).
# One node here; a production cluster has three or five, each with retry_join blocks.
ui            = false
disable_mlock = true   # Raft storage; mlock needs IPC_LOCK, which the container drops
api_addr      = "https://openbao:8200"
cluster_addr  = "https://openbao:8201"

storage "raft" {
  path    = "/openbao/data"
  node_id = "openbao-1"
}

listener "tcp" {
  address       = "0.0.0.0:8200"
  tls_cert_file = "/pki/server.pem"
  tls_key_file  = "/pki/server-key.pem"
  tls_min_version = "tls12"
}
