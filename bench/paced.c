/* An open-loop HTTP/1.1 load at a fixed rate, as wrk2 does (bench/p13n's fixed-rate
 * client when a C compiler is at hand; bench/p13n.py `paced` is the same in Python).
 *
 *   paced PORT RATE DURATION_S CONNS REQUESTS_FILE > records
 *
 * Request i is due at t0 + i / RATE and goes out on keep-alive connection i % CONNS
 * once it is due and that connection's previous answer is in; its latency counts from
 * when it was due, so a server that falls behind is charged for the requests it kept
 * waiting (no coordinated omission). REQUESTS_FILE holds raw requests, each a 4-byte
 * little-endian length then the bytes; request i is number i % count. The output is
 * one 12-byte record per answer (due offset in µs, latency in µs, status: three
 * little-endian uint32s), then the elapsed µs; bench/p13n.py makes the figures.
 *
 * Why C: the client shares the server's two cores, and the Python client costs
 * 55-140 µs of CPU per request, a fifth of what the server spends at 2,000/s. This
 * costs a few µs, so more of the measured tail is the server's own.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536
#define STALLED_NS (30 * (int64_t)1000000000)  /* a server this silent is stuck */

typedef struct {
    int fd;
    long next;       /* the index of the request this connection sends next */
    int in_flight;
    int64_t due_ns;  /* of the request in flight */
    size_t len;
    char buf[BUF];
} conn_t;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static uint32_t get32(const char *p) {
    const unsigned char *b = (const unsigned char *)p;
    return b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24;
}

static void put32(uint32_t v) {
    unsigned char b[4] = {v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >> 24};
    fwrite(b, 1, 4, stdout);
}

/* The length of one whole answer at the start of buf, or 0 while it is incomplete. */
static size_t answer_length(const char *buf, size_t len, int *status) {
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL) return 0;
    size_t head = (size_t)(end - buf) + 4;
    long body = 0;
    for (const char *p = buf; p < end; p++) {
        if (p[0] == '\n' && end - p > 16 && strncasecmp(p + 1, "content-length:", 15) == 0) {
            body = strtol(p + 16, NULL, 10);
            break;
        }
    }
    if (len < head + (size_t)body) return 0;
    *status = (int)strtol(buf + 9, NULL, 10);
    return head + (size_t)body;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: paced PORT RATE DURATION_S CONNS REQUESTS_FILE\n");
        return 2;
    }
    int port = atoi(argv[1]);
    double rate = atof(argv[2]);
    long total = (long)(rate * atof(argv[3]));
    int nconns = atoi(argv[4]);

    FILE *f = fopen(argv[5], "rb");
    if (f == NULL) die("requests file");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)size);
    if (data == NULL || fread(data, 1, (size_t)size, f) != (size_t)size) die("read");
    fclose(f);
    long count = 0;
    for (long at = 0; at + 4 <= size; count++) {
        at += 4 + get32(data + at);
    }
    char **reqs = malloc(sizeof(char *) * (size_t)count);
    uint32_t *lens = malloc(sizeof(uint32_t) * (size_t)count);
    for (long at = 0, k = 0; k < count; k++) {
        lens[k] = get32(data + at);
        reqs[k] = data + at + 4;
        at += 4 + lens[k];
    }

    uint32_t *records = malloc(sizeof(uint32_t) * 3 * (size_t)total);
    long answered = 0;
    int ep = epoll_create1(0);
    int timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    if (ep < 0 || timer < 0) die("epoll/timerfd");
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(ep, EPOLL_CTL_ADD, timer, &ev);

    conn_t *conns = calloc((size_t)nconns, sizeof(conn_t));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    for (int k = 0; k < nconns; k++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[k].fd = fd;
        conns[k].next = k;
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)k;
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }

    const int64_t start = now_ns() + 200000000;  /* connections settle first */
    const double step_ns = 1e9 / rate;
    int64_t progress_ns = start;  /* when the last answer came */
    struct epoll_event events[64];
    while (answered < total) {
        /* Send what is due; arm the timer for the earliest request not yet due. */
        int64_t now = now_ns(), wake = INT64_MAX;
        for (int k = 0; k < nconns; k++) {
            conn_t *c = &conns[k];
            if (c->in_flight || c->next >= total) continue;
            int64_t due = start + (int64_t)(c->next * step_ns);
            if (due > now) {
                if (due < wake) wake = due;
                continue;
            }
            const char *req = reqs[c->next % count];
            uint32_t left = lens[c->next % count];
            while (left > 0) {
                ssize_t n = write(c->fd, req, left);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) die("write");
                req += n;
                left -= (uint32_t)n;
            }
            c->in_flight = 1;
            c->due_ns = due;
        }
        if (wake != INT64_MAX) {
            struct itimerspec its = {{0, 0}, {wake / 1000000000, wake % 1000000000}};
            timerfd_settime(timer, TFD_TIMER_ABSTIME, &its, NULL);
        }
        int n = epoll_wait(ep, events, 64, 1000);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        if (now_ns() - progress_ns > STALLED_NS) {
            fprintf(stderr, "paced: no answer for %d s\n", (int)(STALLED_NS / 1000000000));
            return 1;
        }
        for (int e = 0; e < n; e++) {
            uint32_t k = events[e].data.u32;
            if (k == UINT32_MAX) {
                uint64_t expirations;
                if (read(timer, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
                    die("timerfd");
                continue;
            }
            conn_t *c = &conns[k];
            ssize_t got = read(c->fd, c->buf + c->len, BUF - c->len);
            if (got == 0) {
                fprintf(stderr, "paced: the server closed a connection\n");
                return 1;
            }
            if (got < 0) {
                if (errno == EINTR || errno == EAGAIN) continue;
                die("read");
            }
            c->len += (size_t)got;
            int status = 0;
            size_t whole = answer_length(c->buf, c->len, &status);
            if (whole == 0) {
                if (c->len == BUF) {
                    fprintf(stderr, "paced: an answer over %d bytes\n", BUF);
                    return 1;
                }
                continue;
            }
            int64_t done = now_ns();
            records[answered * 3] = (uint32_t)((c->due_ns - start) / 1000);
            records[answered * 3 + 1] = (uint32_t)((done - c->due_ns) / 1000);
            records[answered * 3 + 2] = (uint32_t)status;
            answered++;
            progress_ns = done;
            memmove(c->buf, c->buf + whole, c->len - whole);
            c->len -= whole;
            c->in_flight = 0;
            c->next += nconns;
        }
    }
    int64_t elapsed = now_ns() - start;
    for (long r = 0; r < answered * 3; r++) put32(records[r]);
    put32((uint32_t)(elapsed / 1000));
    for (int k = 0; k < nconns; k++) close(conns[k].fd);
    return 0;
}
