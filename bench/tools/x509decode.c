// x509decode.c - what OpenSSL here spends decoding one X.509 certificate (d2i_X509, the step a
// full handshake takes for the client certificate on the wire and a resumed one takes again for
// the certificate inside its session ticket). Decodes the same DER N times in a loop and prints
// microseconds of CPU per decode, then the same for the certificate's public key alone
// (d2i_PUBKEY). Single-threaded. Run it from the directory holding pki/ (bench/.work/anchors
// after bench/run): ./x509decode [N] [cert.pem]
// Build: gcc -O2 -o x509decode x509decode.c -lcrypto
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2000;
  const char *path = argc > 2 ? argv[2] : "pki/device.crt";
  FILE *f = fopen(path, "r");
  X509 *cert = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  if (f) fclose(f);
  if (!cert || n <= 0) {
    fprintf(stderr, "usage: x509decode [N] [cert.pem] (default pki/device.crt)\n");
    return 1;
  }
  unsigned char *der = NULL, *key = NULL;
  int der_len = i2d_X509(cert, &der);
  int key_len = i2d_PUBKEY(X509_get0_pubkey(cert), &key);
  X509_free(cert);
  if (der_len <= 0 || key_len <= 0) return 1;

  double t0 = cpu_us();
  for (int i = 0; i < n; i++) {
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, der_len);
    if (!x) return 1;
    X509_free(x);
  }
  double t1 = cpu_us();
  for (int i = 0; i < n; i++) {
    const unsigned char *p = key;
    EVP_PKEY *k = d2i_PUBKEY(NULL, &p, key_len);
    if (!k) return 1;
    EVP_PKEY_free(k);
  }
  double t2 = cpu_us();
  printf("%s: %d decodes: d2i_X509 %.1f us, d2i_PUBKEY %.1f us (CPU per decode; %s)\n", path, n,
         (t1 - t0) / n, (t2 - t1) / n, OpenSSL_version(OPENSSL_VERSION));
  OPENSSL_free(der);
  OPENSSL_free(key);
  return 0;
}
