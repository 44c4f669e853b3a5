// sslmem.c - what OpenSSL itself keeps per idle server-side TLS 1.3 connection (no sockets):
// N in-memory handshakes (client certificate P-256 as the devices use), one small record each
// way, the client freed, the server SSL kept with its memory BIO pair replaced by a null BIO and
// SSL_MODE_RELEASE_BUFFERS on. Prints RSS and malloc'd bytes per kept SSL. With handoff=1 it keeps
// what the hub keeps once it runs the records itself (net::Tls13Records): two keyed AES-256-GCM
// contexts, the server SSL freed too. Run it from the directory holding pki/
// (bench/.work/anchors after bench/run): ./sslmem [N] [mtls 0|1] [handoff 0|1]
// Build: gcc -O2 -o sslmem sslmem.c -lssl -lcrypto
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
  int n = argc > 1 ? atoi(argv[1]) : 2000, mtls = argc > 2 ? atoi(argv[2]) : 1;
  int handoff = argc > 3 ? atoi(argv[3]) : 0;
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
  if (mtls) SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set1_groups_list(c, "P-256");
  SSL **keep = calloc(n, sizeof *keep);
  EVP_CIPHER_CTX **aead = calloc(2 * (size_t)n, sizeof *aead);
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
    char buf[64];
    SSL_write(cs, "hello", 5);
    SSL_read(ss, buf, sizeof buf);
    SSL_write(ss, "hi", 2);
    SSL_read(cs, buf, sizeof buf);
    SSL_free(cs);
    if (handoff) {
      unsigned char key[32];
      RAND_bytes(key, sizeof key);
      for (int k = 0; k < 2; k++) {
        EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
        EVP_EncryptInit_ex(x, EVP_aes_256_gcm(), NULL, key, NULL);
        aead[2 * i + k] = x;
      }
      SSL_free(ss);
      continue;
    }
    BIO *null = BIO_new(BIO_s_null());
    SSL_set_bio(ss, null, null);
    keep[i] = ss;
  }
  printf("mtls=%d n=%d per idle connection (%s): %.1f KiB RSS, %.1f KiB malloc'd\n", mtls, n,
         handoff ? "two AEAD contexts, SSL freed" : "server SSL kept",
         (rss_kb() - r0) / (double)n, (heap_bytes() - h0) / 1024.0 / n);
  return 0;
}
