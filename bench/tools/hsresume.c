// hsresume.c - server CPU per TLS 1.3 mTLS handshake, full and resumed, in one process over
// memory BIOs (no sockets), with OpenSSL's provider key decoders or, with "engine", with the
// built-in EC key method registered as the hub does (pki::use_legacy_ec_keys). Unlike hsbench
// (the anchor), the server issues one session ticket per handshake and every other handshake
// resumes the previous ticket, as devices do. P-256 certificates and ECDHE.
// Run from the directory holding pki/ (bench/.work/anchors after bench/run):
//   ./hsresume [pairs] [engine]
// Build: gcc -O2 -o hsresume hsresume.c -lssl -lcrypto
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double thread_cpu_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "hsresume: %s\n", what);
  ERR_print_errors_fp(stderr);
  exit(1);
}

static EVP_PKEY_METHOD *ec_method;
static const int ec_nids[] = {EVP_PKEY_EC};

static int pkey_methods(ENGINE *e, EVP_PKEY_METHOD **method, const int **nids, int nid) {
  (void)e;
  if (method == NULL) {
    *nids = ec_nids;
    return 1;
  }
  *method = nid == EVP_PKEY_EC ? ec_method : NULL;
  return *method != NULL;
}

static void use_builtin_ec(void) {
  ec_method = EVP_PKEY_meth_new(EVP_PKEY_EC, 0);
  if (ec_method == NULL) die("EVP_PKEY_meth_new");
  EVP_PKEY_meth_copy(ec_method, EVP_PKEY_meth_find(EVP_PKEY_EC));
  ENGINE *e = ENGINE_new();
  if (e == NULL || !ENGINE_set_id(e, "hsresume-ec") || !ENGINE_set_name(e, "built-in EC") ||
      !ENGINE_set_pkey_meths(e, pkey_methods) || !ENGINE_init(e) || !ENGINE_set_default_pkey_meths(e))
    die("engine");
}

static SSL_SESSION *ticket;

// One handshake; returns the server's CPU seconds. `resume` offers the last ticket.
static double handshake(SSL_CTX *server_ctx, SSL_CTX *client_ctx, int resume) {
  SSL *client = SSL_new(client_ctx), *server = SSL_new(server_ctx);
  BIO *client_bio, *server_bio;
  if (client == NULL || server == NULL || !BIO_new_bio_pair(&client_bio, 0, &server_bio, 0)) die("SSL_new");
  SSL_set_bio(client, client_bio, client_bio);
  SSL_set_bio(server, server_bio, server_bio);
  if (resume && ticket != NULL) SSL_set_session(client, ticket);
  SSL_set_connect_state(client);
  SSL_set_accept_state(server);
  int client_done = 0, server_done = 0, rounds = 0;
  double server_s = 0;
  while (!(client_done && server_done)) {
    if (!client_done) {
      int r = SSL_do_handshake(client);
      if (r == 1) client_done = 1;
      else if (SSL_get_error(client, r) != SSL_ERROR_WANT_READ) die("client handshake");
    }
    double t0 = thread_cpu_s();
    if (!server_done) {
      int r = SSL_do_handshake(server);
      if (r == 1) server_done = 1;
      else if (SSL_get_error(server, r) != SSL_ERROR_WANT_READ) die("server handshake");
    }
    server_s += thread_cpu_s() - t0;
    if (++rounds > 20) die("no progress");
  }
  char byte;
  SSL_read(client, &byte, 1);  // takes the NewSessionTicket
  if (resume && !SSL_session_reused(server)) die("the ticket was not accepted");
  if (SSL_get0_peer_certificate(server) == NULL) die("no client certificate on the server side");
  if (!resume) {
    SSL_SESSION_free(ticket);
    ticket = SSL_get1_session(client);
    if (ticket == NULL || !SSL_SESSION_is_resumable(ticket)) die("no ticket");
  }
  // A clean shutdown state, or OpenSSL marks the session not resumable when freeing.
  SSL_set_shutdown(client, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_set_shutdown(server, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(client);
  SSL_free(server);
  return server_s;
}

int main(int argc, char **argv) {
  int pairs = argc > 1 ? atoi(argv[1]) : 500;
  int engine = argc > 2 && strcmp(argv[2], "engine") == 0;
  if (pairs <= 0) die("usage: hsresume [pairs] [engine]");
  if (engine) use_builtin_ec();
  SSL_CTX *s = SSL_CTX_new(TLS_server_method()), *c = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(s, TLS1_3_VERSION);
  SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
  if (SSL_CTX_use_certificate_chain_file(s, "pki/server.crt") != 1 ||
      SSL_CTX_use_PrivateKey_file(s, "pki/server.key", SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(s, "pki/devca.crt", NULL) != 1)
    die("server context (run from the directory holding pki/)");
  SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);  // stateless tickets only, as the hub
  SSL_CTX_set_num_tickets(s, 1);
  SSL_CTX_set_session_id_context(s, (const unsigned char *)"hsresume", 8);
  if (SSL_CTX_use_certificate_chain_file(c, "pki/device.crt") != 1 ||
      SSL_CTX_use_PrivateKey_file(c, "pki/device.key", SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(c, "pki/ca.crt", NULL) != 1)
    die("client context");
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_set1_groups_list(c, "P-256");
  SSL_CTX_set1_groups_list(s, "P-256");
  double full = 0, resumed = 0;
  for (int i = 0; i < pairs; i++) {
    full += handshake(s, c, 0);
    resumed += handshake(s, c, 1);
  }
  printf("%s: server CPU per handshake: full %.1f us, resumed %.1f us (%d each; %s)\n",
         engine ? "built-in EC method" : "provider decoders", full / pairs * 1e6, resumed / pairs * 1e6, pairs,
         OpenSSL_version(OPENSSL_VERSION));
  return 0;
}
