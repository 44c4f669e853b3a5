// anchorcli.c - single-threaded epoll + OpenSSL (non-blocking) load client for anchor measurements.
// Copied from the anchor measurements of 2026-11-23 (see bench/README.md), unchanged except
// for this note, so that the anchor figures of bench/run are measured exactly as they were then.
// Modes:
//   sub   : open N mTLS MQTT 3.1.1 connections, CONNECT + SUBSCRIBE fw/updates QoS0, then record
//           fan-out latency of PUBLISH messages whose payload is "seq <mono_ns>".
//   pub   : one mTLS MQTT connection; publish K messages to fw/updates every I ms with CLOCK_MONOTONIC ts.
//   https : N sequential-new-connection HTTPS GETs (full TLS 1.3 mTLS handshake each), concurrency C.
//           Added 2026-12-05 for the resumption anchor (the modes above are as they were measured):
//           -W FILE asks for session tickets and writes each connection's session to FILE (PEM);
//           -L FILE resumes one session of FILE per connection (N at most the sessions there).
// Build: gcc -O2 -o anchorcli anchorcli.c -lssl -lcrypto
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
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

static const char *host = "127.0.0.1", *bindaddr = NULL, *mode = "sub";
static int port = 8883, N = 1000, conc = 100, K = 5, interval_ms = 1000, timeout_s = 120;
static const char *cert = "pki/device.crt", *key = "pki/device.key", *cafile = "pki/ca.crt";
static const char *groups = "P-256", *outfile = NULL, *idprefix = "d", *path = "/tiny";
static const char *readyfile = NULL;
static const char *save_sessions = NULL, *load_sessions = NULL;
static SSL_SESSION **sessions;  // -W: kept per connection; -L: loaded, one per connection
static int nsessions = 0, nreused = 0;
static SSL_CTX *ctx;
static int ep;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
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

enum { S_TCP, S_TLS, S_CONNACK, S_SUBACK, S_READY, S_HTTP, S_DONE };
typedef struct conn {
  int fd, state, idx;
  SSL *ssl;
  int64_t t0, t_ready;
  int rlen;
  unsigned char rbuf[256];
} conn;

static conn *conns;
static int started = 0, inflight = 0, nready = 0, nfail = 0, ndone = 0;
static int64_t *lat;  // [K][N] latency ns, -1 = not received
static int *recvcnt;   // per seq
static int64_t t_start, t_allready;

static void die(const char *m) {
  perror(m);
  ERR_print_errors_fp(stderr);
  exit(1);
}

static void mk_ctx(void) {
  ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) die("cert");
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) die("key");
  if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) die("ca");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  if (groups && *groups && SSL_CTX_set1_groups_list(ctx, groups) != 1) die("groups");
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (!save_sessions && !load_sessions) SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}

static void ep_mod(conn *c, uint32_t ev, int op) {
  struct epoll_event e = {.events = ev, .data.ptr = c};
  if (epoll_ctl(ep, op, c->fd, &e) < 0) die("epoll_ctl");
}

static void fail(conn *c, const char *why) {
  if (nfail < 10) fprintf(stderr, "conn %d failed in state %d: %s errno=%d\n", c->idx, c->state, why, errno);
  ERR_print_errors_fp(stderr);
  if (c->ssl) SSL_free(c->ssl);
  c->ssl = NULL;
  close(c->fd);
  c->fd = -1;
  c->state = S_DONE;
  nfail++;
  inflight--;
}

static void start_conn(int i) {
  conn *c = &conns[i];
  memset(c, 0, sizeof *c);
  c->idx = i;
  c->t0 = now_ns();
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) die("socket");
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (bindaddr) {
    struct sockaddr_in b = {.sin_family = AF_INET};
    inet_pton(AF_INET, bindaddr, &b.sin_addr);
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(c->fd, (void *)&b, sizeof b) < 0) die("bind");
  }
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, host, &a.sin_addr);
  int r = connect(c->fd, (void *)&a, sizeof a);
  if (r < 0 && errno != EINPROGRESS) die("connect");
  c->state = S_TCP;
  inflight++;
  started++;
  ep_mod(c, EPOLLOUT, EPOLL_CTL_ADD);
}

static void ssl_write_all(conn *c, const void *b, int n) {
  // small control packets; with non-blocking socket and empty buffer this completes immediately.
  int r = SSL_write(c->ssl, b, n);
  if (r != n) fail(c, "SSL_write");
}

static void send_connect(conn *c) {
  unsigned char p[128];
  char id[64];
  int idl = snprintf(id, sizeof id, "%s-%d-%d", idprefix, (int)getpid(), c->idx);
  int rl = 10 + 2 + idl;
  int o = 0;
  p[o++] = 0x10;
  p[o++] = rl;
  memcpy(p + o, "\0\4MQTT\4\2", 8); o += 8;  // proto name, level 4, clean session
  p[o++] = 3600 >> 8; p[o++] = 3600 & 255;   // keepalive 3600s
  p[o++] = idl >> 8; p[o++] = idl & 255;
  memcpy(p + o, id, idl); o += idl;
  ssl_write_all(c, p, o);
}
static void send_subscribe(conn *c) {
  static const unsigned char p[] = {0x82, 15, 0, 1, 0, 10, 'f', 'w', '/', 'u', 'p', 'd', 'a', 't', 'e', 's', 0};
  ssl_write_all(c, p, sizeof p);
}

static void on_publish(conn *c, const unsigned char *pl, int len) {
  int64_t t = now_ns();
  char tmp[64];
  if (len >= (int)sizeof tmp) len = sizeof tmp - 1;
  memcpy(tmp, pl, len);
  tmp[len] = 0;
  int seq;
  long long ts;
  if (sscanf(tmp, "%d %lld", &seq, &ts) != 2 || seq < 0 || seq >= K) return;
  if (lat[(size_t)seq * N + c->idx] < 0) {
    lat[(size_t)seq * N + c->idx] = t - ts;
    recvcnt[seq]++;
  }
}

// parse MQTT packets in rbuf
static void mqtt_parse(conn *c) {
  for (;;) {
    if (c->rlen < 2) return;
    int mult = 1, rl = 0, i = 1;
    unsigned char b;
    do {
      if (i >= c->rlen) return;
      b = c->rbuf[i++];
      rl += (b & 127) * mult;
      mult *= 128;
    } while (b & 128);
    if (i + rl > (int)sizeof c->rbuf) { fail(c, "pkt too big"); return; }
    if (c->rlen < i + rl) return;
    unsigned char type = c->rbuf[0] >> 4;
    unsigned char *v = c->rbuf + i;
    if (type == 2 && c->state == S_CONNACK) {
      if (v[1] != 0) { fail(c, "connack rc"); return; }
      c->state = S_SUBACK;
      send_subscribe(c);
      if (c->state == S_DONE) return;
    } else if (type == 9 && c->state == S_SUBACK) {
      if (v[2] == 0x80) { fail(c, "suback fail"); return; }
      c->state = S_READY;
      c->t_ready = now_ns();
      nready++;
      inflight--;
    } else if (type == 3) {
      int tl = (v[0] << 8) | v[1];
      int off = 2 + tl + (((c->rbuf[0] >> 1) & 3) ? 2 : 0);
      on_publish(c, v + off, rl - off);
    }
    memmove(c->rbuf, c->rbuf + i + rl, c->rlen - i - rl);
    c->rlen -= i + rl;
  }
}

static void http_send(conn *c) {
  char req[256];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", path);
  ssl_write_all(c, req, n);
}

static void finish_http(conn *c, int ok) {
  if (ok) ndone++; else nfail++;
  if (ok && save_sessions) {
    // A copy: OpenSSL marks the live session not resumable when the connection is freed without
    // our close_notify.
    SSL_SESSION *s = SSL_get1_session(c->ssl);
    if (s && SSL_SESSION_is_resumable(s)) sessions[nsessions++] = SSL_SESSION_dup(s);
    SSL_SESSION_free(s);
  }
  SSL_free(c->ssl);
  c->ssl = NULL;
  close(c->fd);
  c->fd = -1;
  c->state = S_DONE;
  inflight--;
}

static void handle(conn *c, uint32_t ev) {
  if (c->state == S_TCP) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) { errno = err; fail(c, "tcp connect"); return; }
    c->ssl = SSL_new(ctx);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, "localhost");
    SSL_set1_host(c->ssl, "localhost");
    if (load_sessions && c->idx < nsessions) SSL_set_session(c->ssl, sessions[c->idx]);
    c->state = S_TLS;
  }
  if (c->state == S_TLS) {
    int r = SSL_connect(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ) { ep_mod(c, EPOLLIN, EPOLL_CTL_MOD); return; }
      if (e == SSL_ERROR_WANT_WRITE) { ep_mod(c, EPOLLOUT, EPOLL_CTL_MOD); return; }
      fail(c, "SSL_connect");
      return;
    }
    ep_mod(c, EPOLLIN, EPOLL_CTL_MOD);
    if (SSL_session_reused(c->ssl)) nreused++;
    if (!strcmp(mode, "https")) {
      c->state = S_HTTP;
      http_send(c);
      return;
    }
    c->state = S_CONNACK;
    send_connect(c);
    return;
  }
  if (c->state == S_HTTP) {
    char buf[16384];
    for (;;) {
      int r = SSL_read(c->ssl, buf, sizeof buf);
      if (r > 0) {
        if (c->rlen == 0) {  // first bytes: check status
          c->rlen = 1;
          if (r < 12 || memcmp(buf + 9, "200", 3)) { fprintf(stderr, "bad status: %.20s\n", buf); finish_http(c, 0); return; }
        }
        continue;
      }
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ) return;
      finish_http(c, c->rlen == 1);  // ZERO_RETURN or SYSCALL(EOF)
      return;
    }
  }
  // MQTT states
  for (;;) {
    int r = SSL_read(c->ssl, c->rbuf + c->rlen, sizeof c->rbuf - c->rlen);
    if (r > 0) {
      c->rlen += r;
      mqtt_parse(c);
      if (c->state == S_DONE) return;
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) return;
    if (c->state == S_READY) { nready--; inflight++; }
    fail(c, "SSL_read/closed");
    return;
  }
}

static void write_ready(void) {
  double el = (t_allready - t_start) / 1e9;
  printf("READY n=%d fail=%d elapsed_s=%.3f rate_per_s=%.1f cpu_s=%.3f rss_kb=%ld\n", nready, nfail, el,
         nready / el, cpu_s(), rss_kb());
  fflush(stdout);
  if (readyfile) {
    FILE *f = fopen(readyfile, "w");
    if (f) { fprintf(f, "%d %d %.3f %.3f\n", nready, nfail, el, cpu_s()); fclose(f); }
  }
}

static void dump_lat(void) {
  if (!outfile) return;
  FILE *f = fopen(outfile, "w");
  if (!f) die("outfile");
  for (int s = 0; s < K; s++)
    for (int i = 0; i < N; i++)
      if (conns[i].state == S_READY) fprintf(f, "%d %lld\n", s, (long long)lat[(size_t)s * N + i]);
  fclose(f);
}

static volatile sig_atomic_t stop = 0;
static void onsig(int s) { (void)s; stop = 1; }

static int run_pub(void) {
  // blocking single connection publisher
  conn c0;
  memset(&c0, 0, sizeof c0);
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, host, &a.sin_addr);
  if (connect(fd, (void *)&a, sizeof a) < 0) die("connect");
  c0.fd = fd;
  c0.ssl = SSL_new(ctx);
  SSL_set_fd(c0.ssl, fd);
  SSL_set_tlsext_host_name(c0.ssl, "localhost");
  SSL_set1_host(c0.ssl, "localhost");
  if (SSL_connect(c0.ssl) != 1) die("SSL_connect");
  send_connect(&c0);
  unsigned char b[16];
  if (SSL_read(c0.ssl, b, 4) != 4 || b[0] != 0x20 || b[3] != 0) die("connack");
  for (int s = 0; s < K; s++) {
    usleep(interval_ms * 1000);
    unsigned char p[128];
    char pl[64];
    int64_t t = now_ns();
    int pll = snprintf(pl, sizeof pl, "%d %lld", s, (long long)t);
    int rl = 2 + 10 + pll, o = 0;
    p[o++] = 0x30; p[o++] = rl; p[o++] = 0; p[o++] = 10;
    memcpy(p + o, "fw/updates", 10); o += 10;
    memcpy(p + o, pl, pll); o += pll;
    if (SSL_write(c0.ssl, p, o) != o) die("publish");
    printf("PUB seq=%d t=%lld\n", s, (long long)t);
    fflush(stdout);
  }
  unsigned char disc[2] = {0xe0, 0};
  SSL_write(c0.ssl, disc, 2);
  SSL_shutdown(c0.ssl);
  close(fd);
  return 0;
}

int main(int argc, char **argv) {
  int o;
  while ((o = getopt(argc, argv, "m:h:p:b:n:c:k:i:t:o:r:g:C:K:A:x:P:W:L:")) != -1) {
    switch (o) {
      case 'm': mode = optarg; break;
      case 'h': host = optarg; break;
      case 'p': port = atoi(optarg); break;
      case 'b': bindaddr = optarg; break;
      case 'n': N = atoi(optarg); break;
      case 'c': conc = atoi(optarg); break;
      case 'k': K = atoi(optarg); break;
      case 'i': interval_ms = atoi(optarg); break;
      case 't': timeout_s = atoi(optarg); break;
      case 'o': outfile = optarg; break;
      case 'r': readyfile = optarg; break;
      case 'g': groups = optarg; break;
      case 'C': cert = optarg; break;
      case 'K': key = optarg; break;
      case 'A': cafile = optarg; break;
      case 'x': idprefix = optarg; break;
      case 'P': path = optarg; break;
      case 'W': save_sessions = optarg; break;
      case 'L': load_sessions = optarg; break;
      default: fprintf(stderr, "bad opt\n"); return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, onsig);
  signal(SIGINT, onsig);
  mk_ctx();
  if (save_sessions) sessions = calloc(N, sizeof *sessions);
  if (load_sessions) {
    FILE *f = fopen(load_sessions, "r");
    if (!f) die("sessions file");
    sessions = calloc(N, sizeof *sessions);
    SSL_SESSION *s;
    while (nsessions < N && (s = PEM_read_SSL_SESSION(f, NULL, NULL, NULL)) != NULL) sessions[nsessions++] = s;
    fclose(f);
    if (nsessions < N) N = nsessions;
  }
  if (!strcmp(mode, "pub")) return run_pub();
  ep = epoll_create1(0);
  conns = calloc(N, sizeof *conns);
  if (strcmp(mode, "https")) {
    lat = malloc(sizeof(int64_t) * (size_t)K * N);
    for (size_t i = 0; i < (size_t)K * N; i++) lat[i] = -1;
    recvcnt = calloc(K, sizeof(int));
  }
  struct epoll_event evs[512];
  t_start = now_ns();
  int64_t deadline = t_start + (int64_t)timeout_s * 1000000000LL;
  int ready_reported = 0, https = !strcmp(mode, "https");
  while (!stop) {
    while (started < N && inflight < conc) start_conn(started);
    int n = epoll_wait(ep, evs, 512, 100);
    for (int i = 0; i < n; i++) handle(evs[i].data.ptr, evs[i].events);
    if (https) {
      if (ndone + nfail >= N) break;
    } else {
      if (!ready_reported && nready + nfail >= N && inflight == 0) {
        t_allready = now_ns();
        write_ready();
        ready_reported = 1;
      }
      if (ready_reported) {
        int all = 1;
        for (int s = 0; s < K; s++)
          if (recvcnt[s] < nready) all = 0;
        if (all) break;
      }
    }
    if (now_ns() > deadline) { fprintf(stderr, "timeout\n"); break; }
  }
  int64_t t_end = now_ns();
  if (https) {
    double el = (t_end - t_start) / 1e9;
    printf("HTTPS n_ok=%d fail=%d elapsed_s=%.3f rate_per_s=%.1f cpu_s=%.3f reused=%d\n", ndone, nfail, el,
           ndone / el, cpu_s(), nreused);
    if (save_sessions) {
      FILE *f = fopen(save_sessions, "w");
      if (!f) die("sessions file");
      for (int i = 0; i < nsessions; i++) PEM_write_SSL_SESSION(f, sessions[i]);
      fclose(f);
    }
    return 0;
  }
  if (!ready_reported) { t_allready = now_ns(); write_ready(); }
  for (int s = 0; s < K; s++) printf("SEQ %d received=%d/%d\n", s, recvcnt[s], nready);
  dump_lat();
  printf("DONE cpu_s=%.3f rss_kb=%ld\n", cpu_s(), rss_kb());
  return 0;
}
