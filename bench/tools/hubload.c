// hubload.c - load client for otahubd's device endpoint (bench/run). Single-threaded epoll with
// non-blocking OpenSSL, like anchors/anchorcli.c, so a connection costs ~25 KB here instead of
// ~80 KB in Node. Every connection is one simulated device with its own P-256 certificate, made
// in-process from a device CA (CN = <prefix>-<index>), speaking NervesHubLink's protocol: TLS 1.3
// mTLS, websocket upgrade on /socket/websocket?vsn=2.0.0, Phoenix V2 JSON join of topic "device".
//
// Modes:
//   hold  : connect N devices (C handshakes in flight), join, heartbeat, stay connected. Prints
//           READY when all joined (rate, client CPU), then records when each device receives its
//           first "update" push (CLOCK_REALTIME, -o FILE) and reconnects lost devices after a
//           random delay in [0, -j S] s (resuming with the device's TLS session when it has one),
//           printing REJOINED when all are joined again. Stops on SIGTERM/SIGINT or -t.
//   churn : for each of N devices: connect, join, disconnect (C at once). A WARMUP pass
//           provisions them, a FULL pass uses full handshakes; with -R a RESUMED pass resumes each
//           device's session (ticket) from the FULL pass.
//           With -H PID, samples that process's CPU time (server CPU/handshake) and its threads'
//           switches around each pass (hub_cpu_s, hub_csw).
//   -E    : decode the hub's EC certificate keys with OpenSSL's built-in method (bench/run passes it).
// Build: gcc -O2 -o hubload hubload.c -lssl -lcrypto
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *host = "127.0.0.1", *mode = "hold", *cafile = NULL, *devca_crt = NULL,
                  *devca_key = NULL, *prefix = "bench", *outfile = NULL, *readyfile = NULL,
                  *join_file = NULL;
static const char *binds[64];
static int nbinds = 0;
static int port = 4001, N = 1000, conc = 64, timeout_s = 600, heartbeat_s = 30, first = 0;
static int resume_pass = 0, hub_pid = 0, legacy_ec = 0;
static double jitter_s = 5;
static SSL_CTX *ctx;
static int ep;
static X509 **certs;
static EVP_PKEY **keys;
static char *join_payload = "{}";

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static int64_t real_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}
static long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char l[256];
  long v = 0;
  while (f && fgets(l, sizeof l, f))
    if (!strncmp(l, "VmRSS:", 6)) v = atol(l + 6);
  if (f) fclose(f);
  return v;
}
// CPU seconds (user + system) of another process, -1 when unreadable.
static double proc_cpu_s(int pid) {
  char p[64], buf[1024];
  snprintf(p, sizeof p, "/proc/%d/stat", pid);
  FILE *f = fopen(p, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *s = strrchr(buf, ')');
  if (!s) return -1;
  unsigned long ut = 0, st = 0;
  // fields after ")": state(3) ... utime(14) stime(15)
  if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
  return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}
// Context switches (voluntary + involuntary) of all threads of another process, -1 when unreadable.
static long proc_csw(int pid) {
  char p[64];
  snprintf(p, sizeof p, "/proc/%d/task", pid);
  DIR *d = opendir(p);
  if (!d) return -1;
  long total = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char path[320], l[256];
    snprintf(path, sizeof path, "/proc/%d/task/%s/status", pid, e->d_name);
    FILE *f = fopen(path, "r");
    while (f && fgets(l, sizeof l, f))
      if (strstr(l, "ctxt_switches:")) total += atol(strchr(l, ':') + 1);
    if (f) fclose(f);
  }
  closedir(d);
  return total;
}
static void die(const char *m) {
  perror(m);
  ERR_print_errors_fp(stderr);
  exit(1);
}

// ------------------------------------------------------------------------------------------------
// Device certificates, made in-process (ECDSA P-256, SHA-256, clientAuth, SKI/AKI).
static void make_certs(void) {
  FILE *f = fopen(devca_crt, "r");
  if (!f) die(devca_crt);
  X509 *ca = PEM_read_X509(f, NULL, NULL, NULL);
  fclose(f);
  f = fopen(devca_key, "r");
  if (!f) die(devca_key);
  EVP_PKEY *cakey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  fclose(f);
  if (!ca || !cakey) die("device CA");
  certs = calloc(N, sizeof *certs);
  keys = calloc(N, sizeof *keys);
  for (int i = 0; i < N; i++) {
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    if (!k || !x) die("keygen");
    X509_set_version(x, 2);
    unsigned char serial[16];
    RAND_bytes(serial, sizeof serial);
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 365L * 86400);
    X509_set_pubkey(x, k);
    char cn[128];
    snprintf(cn, sizeof cn, "%s-%d", prefix, first + i);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(ca));
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, ca, x, NULL, NULL, 0);
    const char *exts[][2] = {{"basicConstraints", "critical,CA:FALSE"},
                             {"keyUsage", "critical,digitalSignature"},
                             {"extendedKeyUsage", "clientAuth"},
                             {"subjectKeyIdentifier", "hash"},
                             {"authorityKeyIdentifier", "keyid"}};
    for (size_t e = 0; e < sizeof exts / sizeof exts[0]; e++) {
      X509_EXTENSION *ext = X509V3_EXT_conf(NULL, &v3, exts[e][0], exts[e][1]);
      if (!ext) die(exts[e][0]);
      X509_add_ext(x, ext, -1);
      X509_EXTENSION_free(ext);
    }
    if (!X509_sign(x, cakey, EVP_sha256())) die("sign");
    certs[i] = x;
    keys[i] = k;
  }
  X509_free(ca);
  EVP_PKEY_free(cakey);
}

// -E: the client decodes EC certificate keys (the hub's certificates, on every full handshake)
// with OpenSSL's built-in EC method, as otahubd does by default before OpenSSL 3.2
// (server/domain/pki/ec_keys.cpp): OpenSSL 3.0's provider decoders cost ~130 us per certificate,
// load-client CPU that the hub and PostgreSQL would otherwise get on a 2-core machine. Registered
// after make_certs: with it, EVP_EC_gen("P-256") no longer knows the curve's name.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static EVP_PKEY_METHOD *ec_method;
static const int ec_nids[] = {EVP_PKEY_EC};
static int ec_pkey_meths(ENGINE *e, EVP_PKEY_METHOD **m, const int **nids, int nid) {
  (void)e;
  if (!m) {
    *nids = ec_nids;
    return 1;
  }
  *m = nid == EVP_PKEY_EC ? ec_method : NULL;
  return *m != NULL;
}
static void use_legacy_ec_keys(void) {
  const EVP_PKEY_METHOD *builtin = EVP_PKEY_meth_find(EVP_PKEY_EC);
  ec_method = builtin ? EVP_PKEY_meth_new(EVP_PKEY_EC, 0) : NULL;
  if (!ec_method) die("EC key method");
  EVP_PKEY_meth_copy(ec_method, builtin);
  ENGINE *e = ENGINE_new();
  if (!e || !ENGINE_set_id(e, "hubload-ec") || !ENGINE_set_name(e, "built-in EC key method") ||
      !ENGINE_set_pkey_meths(e, ec_pkey_meths) || !ENGINE_init(e) || !ENGINE_set_default_pkey_meths(e))
    die("EC engine");
  ENGINE_finish(e);
  ENGINE_free(e);
}
#pragma GCC diagnostic pop

static void mk_ctx(void) {
  ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) die("server ca");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  if (SSL_CTX_set1_groups_list(ctx, "P-256") != 1) die("groups");
  // Sessions are kept by hand (SSL_get1_session), not in the client cache.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}

// ------------------------------------------------------------------------------------------------
enum { S_IDLE, S_TCP, S_TLS, S_UPGRADE, S_JOIN, S_JOINED, S_CLOSING };
typedef struct conn {
  int fd, state, idx, pass;
  SSL *ssl;
  SSL_SESSION *session;
  int64_t t0, next_hb, reconnect_at, update_at;
  int joined_once, reused;
  int rlen, rcap;
  unsigned char *rbuf;
} conn;

static conn *conns;
static int nresumable = 0;
static int inflight = 0, njoined = 0, nfail = 0, nupdates = 0, nreused = 0, ndone_pass = 0;
static int64_t hb_ref = 1000;
static volatile sig_atomic_t stop = 0;
static void onsig(int s) { (void)s; stop = 1; }

static void ep_set(conn *c, uint32_t ev, int op) {
  struct epoll_event e = {.events = ev, .data.ptr = c};
  if (epoll_ctl(ep, op, c->fd, &e) < 0) die("epoll_ctl");
}

static void drop(conn *c, int failed, const char *why) {
  if (failed) {
    if (nfail < 10) {
      fprintf(stderr, "device %d failed in state %d: %s\n", c->idx, c->state, why);
      ERR_print_errors_fp(stderr);
    }
    nfail++;
  }
  ERR_clear_error();
  if (c->state == S_JOINED) njoined--;
  if (c->state > S_IDLE && c->state < S_JOINED) inflight--;
  if (c->ssl) SSL_free(c->ssl);
  c->ssl = NULL;
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  free(c->rbuf);
  c->rbuf = NULL;
  c->rlen = c->rcap = 0;
  c->state = S_IDLE;
}

static void start_conn(conn *c) {
  c->t0 = mono_ns();
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) die("socket");
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (nbinds) {
    struct sockaddr_in b = {.sin_family = AF_INET};
    inet_pton(AF_INET, binds[c->idx % nbinds], &b.sin_addr);
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(c->fd, (void *)&b, sizeof b) < 0) die("bind");
  }
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, host, &a.sin_addr);
  int r = connect(c->fd, (void *)&a, sizeof a);
  c->state = S_TCP;
  inflight++;
  if (r < 0 && errno != EINPROGRESS) {
    drop(c, 1, "connect");
    return;
  }
  ep_set(c, EPOLLOUT, EPOLL_CTL_ADD);
}

// Masked client text frame.
static int send_text(conn *c, const char *text) {
  size_t n = strlen(text);
  unsigned char *f = malloc(n + 14);
  size_t o = 0;
  f[o++] = 0x81;
  if (n < 126) {
    f[o++] = 0x80 | n;
  } else if (n < 65536) {
    f[o++] = 0x80 | 126;
    f[o++] = n >> 8;
    f[o++] = n & 255;
  } else {
    f[o++] = 0x80 | 127;
    for (int i = 7; i >= 0; i--) f[o++] = (n >> (8 * i)) & 255;
  }
  unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
  memcpy(f + o, mask, 4);
  o += 4;
  for (size_t i = 0; i < n; i++) f[o + i] = text[i] ^ mask[i & 3];
  o += n;
  int r = SSL_write(c->ssl, f, (int)o);
  free(f);
  return r == (int)o;
}

static void joined(conn *c);

// One text frame from the hub.
static void on_text(conn *c, const char *p, size_t n) {
  if (c->state == S_JOIN) {
    if (memmem(p, n, "\"phx_reply\"", 11) && memmem(p, n, "\"1\",\"1\"", 7)) {
      if (memmem(p, n, "\"ok\"", 4)) {
        joined(c);
      } else {
        drop(c, 1, "join refused");
      }
    }
    return;
  }
  if (c->state == S_JOINED && !c->update_at && memmem(p, n, "\"update\"", 8)) {
    c->update_at = real_ns();
    nupdates++;
  }
}

static void parse_frames(conn *c) {
  size_t off = 0;
  while (c->state == S_JOIN || c->state == S_JOINED) {
    size_t avail = c->rlen - off;
    if (avail < 2) break;
    unsigned char *b = c->rbuf + off;
    uint64_t len = b[1] & 127;
    size_t hdr = 2;
    if (len == 126) {
      if (avail < 4) break;
      len = (b[2] << 8) | b[3];
      hdr = 4;
    } else if (len == 127) {
      if (avail < 10) break;
      len = 0;
      for (int i = 0; i < 8; i++) len = (len << 8) | b[2 + i];
      hdr = 10;
    }
    if (avail < hdr + len) break;
    int opcode = b[0] & 15;
    if (opcode == 1) on_text(c, (const char *)b + hdr, len);
    if (opcode == 8) {
      drop(c, 0, "closed by hub");
      return;
    }
    off += hdr + len;
  }
  if (c->rbuf && off) {
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
  }
}

static void send_join(conn *c) {
  size_t n = strlen(join_payload) + 64;
  char *msg = malloc(n);
  snprintf(msg, n, "[\"1\",\"1\",\"device\",\"phx_join\",%s]", join_payload);
  if (!send_text(c, msg)) {
    free(msg);
    drop(c, 1, "send join");
    return;
  }
  free(msg);
  c->state = S_JOIN;
}

static int in_churn(void) { return !strcmp(mode, "churn"); }

static void joined(conn *c) {
  c->state = S_JOINED;
  inflight--;
  njoined++;
  c->joined_once = 1;
  if (SSL_session_reused(c->ssl)) {
    nreused++;
    c->reused = 1;
  }
  // The ticket arrived with the handshake; keep it for the next connection of this device.
  SSL_SESSION *s = SSL_get1_session(c->ssl);
  if (s && !SSL_SESSION_is_resumable(s)) {
    SSL_SESSION_free(s);  // no ticket (yet): keep the previous one, if any
    s = NULL;
  }
  if (s) {
    // A copy: OpenSSL marks the live connection's session not resumable when the connection
    // later dies abnormally (the hub restarting), which must not spoil the saved ticket.
    SSL_SESSION *copy = SSL_SESSION_dup(s);
    SSL_SESSION_free(s);
    s = copy;
  }
  if (s) {
    nresumable++;
    if (c->session) SSL_SESSION_free(c->session);
    c->session = s;
  }
  if (in_churn()) {
    ndone_pass++;
    njoined--;
    SSL_shutdown(c->ssl);
    c->state = S_CLOSING;
    drop(c, 0, NULL);
    return;
  }
  c->next_hb = mono_ns() + (int64_t)heartbeat_s * 1000000000LL * (c->idx % 1000 + 1) / 1000;
}

static void rd_grow(conn *c) {
  if (c->rcap - c->rlen < 4096) {
    c->rcap = c->rcap ? c->rcap * 2 : 8192;
    c->rbuf = realloc(c->rbuf, c->rcap);
  }
}

static void handle(conn *c, uint32_t ev) {
  (void)ev;
  if (c->state == S_TCP) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
      errno = err;
      drop(c, 1, strerror(err));
      return;
    }
    c->ssl = SSL_new(ctx);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, "localhost");
    SSL_set1_host(c->ssl, "localhost");
    SSL_use_certificate(c->ssl, certs[c->idx]);
    SSL_use_PrivateKey(c->ssl, keys[c->idx]);
    if (c->session && (resume_pass || !in_churn())) SSL_set_session(c->ssl, c->session);
    c->state = S_TLS;
  }
  if (c->state == S_TLS) {
    int r = SSL_connect(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ) return ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
      if (e == SSL_ERROR_WANT_WRITE) return ep_set(c, EPOLLOUT, EPOLL_CTL_MOD);
      drop(c, 1, "TLS handshake");
      return;
    }
    ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
    static const char req[] =
        "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n";
    if (SSL_write(c->ssl, req, sizeof req - 1) != (int)sizeof req - 1) {
      drop(c, 1, "send upgrade");
      return;
    }
    c->state = S_UPGRADE;
  }
  for (;;) {
    rd_grow(c);
    int r = SSL_read(c->ssl, c->rbuf + c->rlen, c->rcap - c->rlen);
    if (r <= 0) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ) break;
      drop(c, c->state != S_JOINED, "connection lost");
      return;
    }
    c->rlen += r;
    if (c->state == S_UPGRADE) {
      unsigned char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
      if (!end) continue;
      if (c->rlen < 12 || memcmp(c->rbuf + 9, "101", 3)) {
        fprintf(stderr, "device %d: upgrade refused: %.40s\n", c->idx, c->rbuf);
        drop(c, 1, "upgrade refused");
        return;
      }
      size_t used = end + 4 - c->rbuf;
      memmove(c->rbuf, c->rbuf + used, c->rlen - used);
      c->rlen -= used;
      send_join(c);
      if (c->state != S_JOIN) return;
    }
    parse_frames(c);
    if (c->state == S_IDLE) return;
  }
  // Idle sessions hold no read buffer.
  if (c->rlen == 0 && c->rbuf) {
    free(c->rbuf);
    c->rbuf = NULL;
    c->rcap = 0;
  }
}

static void heartbeats(int64_t now) {
  char msg[96];
  for (int i = 0; i < N; i++) {
    conn *c = &conns[i];
    if (c->state != S_JOINED || now < c->next_hb) continue;
    snprintf(msg, sizeof msg, "[null,\"%lld\",\"phoenix\",\"heartbeat\",{}]", (long long)hb_ref++);
    if (!send_text(c, msg)) {
      drop(c, 0, NULL);
      continue;
    }
    c->next_hb = now + (int64_t)heartbeat_s * 1000000000LL;
  }
}

static void report(const char *what, int64_t t0, double hub0, long csw0) {
  double el = (mono_ns() - t0) / 1e9;
  double hub = hub_pid ? proc_cpu_s(hub_pid) - hub0 : -1;
  long csw = hub_pid ? proc_csw(hub_pid) - csw0 : -1;
  printf("%s resumable=%d joined=%d fail=%d reused=%d elapsed_s=%.3f rate_per_s=%.1f client_cpu_s=%.3f "
         "client_rss_kb=%ld hub_cpu_s=%.3f hub_csw=%ld\n",
         what, nresumable, in_churn() ? ndone_pass : njoined, nfail, nreused, el,
         (in_churn() ? ndone_pass : njoined) / el, cpu_s(), rss_kb(), hub, csw);
  fflush(stdout);
  if (readyfile) {
    FILE *f = fopen(readyfile, "a");
    if (f) {
      fprintf(f, "%s %d %d %d %.3f %.3f\n", what, in_churn() ? ndone_pass : njoined, nfail, nreused,
              el, hub);
      fclose(f);
    }
  }
}

static int run_churn(void) {
  // Pass 0 provisions the devices (JITP) and is not measured; pass 1 is full handshakes of
  // known devices; pass 2 (with -R) resumes each device's session from pass 1.
  const int passes = resume_pass ? 3 : 2;
  for (int pass = 0; pass < passes; pass++) {
    resume_pass = pass == 2;
    ndone_pass = nfail = nreused = 0;
    int next = 0;
    int64_t t0 = mono_ns();
    double hub0 = hub_pid ? proc_cpu_s(hub_pid) : 0;
    long csw0 = hub_pid ? proc_csw(hub_pid) : 0;
    struct epoll_event evs[512];
    while (!stop && (next < N || inflight > 0)) {
      while (next < N && inflight < conc) start_conn(&conns[next++]);
      int n = epoll_wait(ep, evs, 512, 100);
      for (int i = 0; i < n; i++) handle(evs[i].data.ptr, evs[i].events);
      if (mono_ns() - t0 > (int64_t)timeout_s * 1000000000LL) break;
    }
    report(pass == 0 ? "WARMUP" : pass == 1 ? "FULL" : "RESUMED", t0, hub0, csw0);
  }
  return 0;
}

static void dump_updates(void) {
  if (!outfile) return;
  FILE *f = fopen(outfile, "w");
  if (!f) die(outfile);
  for (int i = 0; i < N; i++)
    if (conns[i].update_at) fprintf(f, "%lld\n", (long long)conns[i].update_at);
  fclose(f);
}

static int run_hold(void) {
  struct epoll_event evs[512];
  int next = 0, ready = 0, lost_since_ready = 0, updated = 0;
  int64_t t0 = mono_ns(), t_lost = 0;
  double hub0 = hub_pid ? proc_cpu_s(hub_pid) : 0;
  long csw0 = hub_pid ? proc_csw(hub_pid) : 0;
  int64_t deadline = t0 + (int64_t)timeout_s * 1000000000LL;
  while (!stop && mono_ns() < deadline) {
    int64_t now = mono_ns();
    while (next < N && inflight < conc) start_conn(&conns[next++]);
    if (ready) {
      // Reconnect lost devices after their jittered delay.
      for (int i = 0; i < N; i++) {
        conn *c = &conns[i];
        if (c->state != S_IDLE) continue;
        if (!c->reconnect_at) {
          if (!t_lost) {
            t_lost = now;
            nreused = 0;
            hub0 = hub_pid ? proc_cpu_s(hub_pid) : 0;
            csw0 = hub_pid ? proc_csw(hub_pid) : 0;
          }
          lost_since_ready = 1;
          c->reconnect_at = now + (int64_t)(jitter_s * 1e9 * (rand() / (RAND_MAX + 1.0))) + 1;
        } else if (now >= c->reconnect_at && inflight < conc) {
          c->reconnect_at = 0;
          start_conn(c);
        }
      }
      if (lost_since_ready && njoined == N) {
        report("REJOINED", t_lost, hub0, csw0);
        lost_since_ready = 0;
        t_lost = 0;
      }
    }
    int n = epoll_wait(ep, evs, 512, 20);
    for (int i = 0; i < n; i++) handle(evs[i].data.ptr, evs[i].events);
    if (!ready && next >= N && inflight == 0) {
      report("READY", t0, hub0, csw0);
      ready = 1;
      nfail = 0;
    }
    heartbeats(mono_ns());
    if (ready && !updated && nupdates > 0 && nupdates >= njoined) {
      dump_updates();
      printf("UPDATED updates=%d joined=%d\n", nupdates, njoined);
      fflush(stdout);
      updated = 1;
    }
  }
  dump_updates();
  printf("DONE joined=%d updates=%d client_cpu_s=%.3f client_rss_kb=%ld\n", njoined, nupdates,
         cpu_s(), rss_kb());
  return 0;
}

static char *slurp(const char *file) {
  FILE *f = fopen(file, "r");
  if (!f) die(file);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc(n + 1);
  if (fread(s, 1, n, f) != (size_t)n) die(file);
  s[n] = 0;
  while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ')) s[--n] = 0;
  fclose(f);
  return s;
}

int main(int argc, char **argv) {
  int o;
  while ((o = getopt(argc, argv, "m:h:p:b:n:c:t:o:r:A:a:k:x:f:J:e:j:RH:E")) != -1) {
    switch (o) {
      case 'm': mode = optarg; break;
      case 'h': host = optarg; break;
      case 'p': port = atoi(optarg); break;
      case 'b':
        if (nbinds < 64) binds[nbinds++] = optarg;
        break;
      case 'n': N = atoi(optarg); break;
      case 'c': conc = atoi(optarg); break;
      case 't': timeout_s = atoi(optarg); break;
      case 'o': outfile = optarg; break;
      case 'r': readyfile = optarg; break;
      case 'A': cafile = optarg; break;
      case 'a': devca_crt = optarg; break;
      case 'k': devca_key = optarg; break;
      case 'x': prefix = optarg; break;
      case 'f': first = atoi(optarg); break;
      case 'J': join_file = optarg; break;
      case 'e': heartbeat_s = atoi(optarg); break;
      case 'j': jitter_s = atof(optarg); break;
      case 'R': resume_pass = 1; break;
      case 'H': hub_pid = atoi(optarg); break;
      case 'E': legacy_ec = 1; break;
      default:
        fprintf(stderr,
                "usage: hubload -m hold|churn -p PORT -A server-ca.pem -a devca.crt -k devca.key "
                "[-n N] [-c C] [-b 127.0.0.2 ...] [-x prefix] [-f first] [-J join.json] [-e hb_s] "
                "[-j jitter_s] [-R] [-H hub_pid] [-E] [-o updates.txt] [-r ready.txt] [-t timeout_s]\n");
        return 2;
    }
  }
  if (!cafile || !devca_crt || !devca_key) {
    fprintf(stderr, "-A, -a and -k are required\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, onsig);
  signal(SIGINT, onsig);
  srand(getpid());
  if (join_file) join_payload = slurp(join_file);
  mk_ctx();
  int64_t c0 = mono_ns();
  make_certs();
  fprintf(stderr, "hubload: %d device certificates in %.2f s\n", N, (mono_ns() - c0) / 1e9);
  // The CPU spent before the first connection (certificates), for per-connection figures.
  printf("CERTS n=%d client_cpu_s=%.3f\n", N, cpu_s());
  fflush(stdout);
  if (legacy_ec) use_legacy_ec_keys();
  ep = epoll_create1(0);
  conns = calloc(N, sizeof *conns);
  for (int i = 0; i < N; i++) {
    conns[i].idx = i;
    conns[i].fd = -1;
  }
  return in_churn() ? run_churn() : run_hold();
}
