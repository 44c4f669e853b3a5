// sslhandoff.c - what an idle connection keeps once the record layer is the hub's own
// (net::Tls13Records) instead of OpenSSL's: N in-memory mTLS handshakes as in sslmem.c, then per
// connection two keyed AES-256-GCM contexts are kept and both SSL objects are freed. Prints RSS and
// malloc'd bytes per connection, to set against sslmem's figure for a kept server SSL. Run it from
// the directory holding pki/ (bench/.work/anchors after bench/run): ./sslhandoff [N]
// Build: gcc -O2 -o sslhandoff sslhandoff.c -lssl -lcrypto
#include <malloc.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char l[256];
  long v = 0;
  while (f && fgets(l, sizeof l, f))
    if (!strncmp(l, "VmRSS:", 6)) v = atol(l + 6);
  if (f) fclose(f);
  return v;
}
static size_t heap_bytes(void) {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2000;
  SSL_CTX *s = SSL_CTX_new(TLS_server_method()), *c = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(s, TLS1_3_VERSION);
  if (SSL_CTX_use_certificate_chain_file(s, "pki/server.crt") != 1 ||
      SSL_CTX_use_PrivateKey_file(s, "pki/server.key", SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(s, "pki/devca.crt", NULL) != 1 ||
      SSL_CTX_use_certificate_chain_file(c, "pki/device.crt") != 1 ||
      SSL_CTX_use_PrivateKey_file(c, "pki/device.key", SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(c, "pki/ca.crt", NULL) != 1) {
    fprintf(stderr, "run from a directory with pki/ (anchors/mkcerts.sh)\n");
    return 1;
  }
  SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set1_groups_list(c, "P-256");
  EVP_CIPHER_CTX **keep = calloc(2 * (size_t)n, sizeof *keep);
  long r0 = rss_kb();
  size_t h0 = heap_bytes();
  for (int i = 0; i < n; i++) {
    SSL *cs = SSL_new(c), *ss = SSL_new(s);
    BIO *b1, *b2;
    BIO_new_bio_pair(&b1, 0, &b2, 0);
    SSL_set_bio(cs, b1, b1);
    SSL_set_bio(ss, b2, b2);
    SSL_set_connect_state(cs);
    SSL_set_accept_state(ss);
    int cd = 0, sd = 0, rounds = 0;
    while (!(cd && sd) && rounds++ < 20) {
      if (!cd && SSL_do_handshake(cs) == 1) cd = 1;
      if (!sd && SSL_do_handshake(ss) == 1) sd = 1;
    }
    unsigned char key[32];
    RAND_bytes(key, sizeof key);
    for (int k = 0; k < 2; k++) {
      EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
      EVP_EncryptInit_ex(x, EVP_aes_256_gcm(), NULL, key, NULL);
      keep[2 * i + k] = x;
    }
    SSL_free(cs);
    SSL_free(ss);
  }
  printf("n=%d per connection: %.2f KiB RSS, %.2f KiB malloc'd (two keyed AES-256-GCM contexts, SSL freed)\n",
         n, (rss_kb() - r0) / (double)n, (heap_bytes() - h0) / 1024.0 / n);
  return 0;
}
