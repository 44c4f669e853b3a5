// hsbench.c - in-process TLS 1.3 mTLS full-handshake cost with OpenSSL (no sockets, memory BIOs).
// Copied from the anchor measurements of 2026-11-23 (see bench/README.md), unchanged except
// for this note, so that the anchor figures of bench/run are measured exactly as they were then.
// Measures CPU time spent inside the server-side SSL calls vs client-side calls separately.
// Server: server.crt/key, requires+verifies client cert against devca.crt. Client: device cert, verifies ca.crt.
// Build: gcc -O2 -o hsbench hsbench.c -lssl -lcrypto ; Run: ./hsbench [iterations] [groups]
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double tcpu(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}
static void die(const char *m) { fprintf(stderr, "%s\n", m); ERR_print_errors_fp(stderr); exit(1); }

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2000;
  const char *groups = argc > 2 ? argv[2] : "P-256";
  SSL_CTX *s = SSL_CTX_new(TLS_server_method()), *c = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(s, TLS1_3_VERSION);
  SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
  if (SSL_CTX_use_certificate_chain_file(s, "pki/server.crt") != 1 ||
      SSL_CTX_use_PrivateKey_file(s, "pki/server.key", SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(s, "pki/devca.crt", NULL) != 1)
    die("server ctx");
  SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(s, 0);
  if (SSL_CTX_use_certificate_chain_file(c, "pki/device.crt") != 1 ||
      SSL_CTX_use_PrivateKey_file(c, "pki/device.key", SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(c, "pki/ca.crt", NULL) != 1)
    die("client ctx");
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set1_groups_list(c, groups);
  SSL_CTX_set1_groups_list(s, groups);
  double ts = 0, tc = 0;
  for (int i = 0; i < n; i++) {
    SSL *cs = SSL_new(c), *ss = SSL_new(s);
    BIO *b1, *b2;
    BIO_new_bio_pair(&b1, 0, &b2, 0);
    SSL_set_bio(cs, b1, b1);
    SSL_set_bio(ss, b2, b2);
    SSL_set_connect_state(cs);
    SSL_set_accept_state(ss);
    int cd = 0, sd = 0, rounds = 0;
    while (!(cd && sd)) {
      double t0 = tcpu();
      if (!cd) {
        int r = SSL_do_handshake(cs);
        if (r == 1) cd = 1;
        else if (SSL_get_error(cs, r) != SSL_ERROR_WANT_READ) die("client hs");
      }
      double t1 = tcpu();
      if (!sd) {
        int r = SSL_do_handshake(ss);
        if (r == 1) sd = 1;
        else if (SSL_get_error(ss, r) != SSL_ERROR_WANT_READ) die("server hs");
      }
      double t2 = tcpu();
      tc += t1 - t0;
      ts += t2 - t1;
      if (++rounds > 20) die("no progress");
    }
    SSL_free(cs);
    SSL_free(ss);
  }
  printf("groups=%s n=%d server_us_per_hs=%.1f client_us_per_hs=%.1f server_hs_per_cpu_s=%.0f\n", groups, n,
         ts / n * 1e6, tc / n * 1e6, n / ts);
  return 0;
}
