/*
 * loadgen: RTP load generator for rtpproxy-protocol relays.
 *
 * For N calls it sets up sessions over the UDP control socket the way
 * Kamailio does (U with the caller's address, L with the callee's, D at the
 * end), then sends RTP both ways at a fixed packet rate (default 50 pps per
 * direction, 12-byte header + 160-byte payload).  Each payload carries the
 * send time (CLOCK_REALTIME); the arrival time is the kernel receive
 * timestamp (SO_TIMESTAMPNS), so the generator's own scheduling delay on the
 * receive side is not counted.  It reports loss and the one-way latency
 * through the relay (p50/p90/p99/p99.9/max) for packets sent inside the
 * measurement window.
 *
 * To stay cheaper per packet than the relay it is measuring, it uses a few
 * shared sockets (calls are spread over --socks caller/callee socket pairs;
 * the relay sends each leg to the address given in U/L, which may be shared
 * by many calls), sendmmsg() batches and recvmmsg() batches, and a single
 * thread.  Its own CPU use over the window is reported (gen_busy).
 *
 * stdout protocol (line based, flushed):
 *   MEASURE_START <unix time>   when the measurement window opens
 *   MEASURE_END <unix time>     when it closes (sending stops)
 *   RESULT {json}               final figures (also on failure, with "error")
 * Progress and diagnostics go to stderr (with --timeline: packets received and
 * the largest latency per 100 ms of send time over the window).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x52545042u /* "RTPB" */
#define RTP_HDR 12
#define MAX_PAYLOAD 1400
#define RX_BATCH 64
#define HIST_US 1000000 /* 1 us buckets up to 1 s */
#define ST_U 0
#define ST_L 1
#define ST_D 2
#define ST_DI 3 /* D retried with media-indexed tags */

struct payload {
	uint32_t magic;
	uint32_t call;
	uint32_t dir;
	uint32_t seq;
	uint64_t ts_ns;
	uint32_t in_window;
	uint32_t pad;
} __attribute__((packed));

struct call {
	struct sockaddr_in to_callee_via; /* caller sends here (port from L reply) */
	struct sockaddr_in to_caller_via; /* callee sends here (port from U reply) */
	uint32_t seq[2];
	uint8_t stage;   /* next/current control stage */
	uint8_t pending; /* a command is outstanding */
	uint8_t done;
	uint8_t failed;
	uint8_t tries;
	int64_t sent_at;
};

static struct {
	struct sockaddr_in ctl;
	const char *bind_ip;
	int calls;
	double duration, warmup, drain;
	int rate;
	int payload;
	int socks;
	int window;
	int ctl_timeout_ms;
	int ctl_tries;
	int tx_batch;
	int tick_us;
	int teardown;
	int calibrate;
	int timeline;
	int direct; /* replies may name the requester's own endpoint (the floor) */
	char prefix[64];
} opt;

static int *caller_fd, *callee_fd;
static struct sockaddr_in *caller_sa, *callee_sa;
static struct call *calls;
static int ctl_fd;
static uint32_t *hist;
static uint64_t hist_over, lat_max_ns, lat_sum_ns;
static uint64_t tx_meas, tx_total, tx_errors, rx_meas, rx_total, rx_bad, rx_window_arrivals;
static uint32_t rxq_ovfl_last[1024], rxq_ovfl_first[1024];
static int rxq_seen[1024];
static volatile int in_window_flag, window_open;
static uint64_t ctl_retrans, ctl_errors, d_fallbacks, d_failed;
static char error_msg[200];
#define TL_MAX 6000 /* 100 ms buckets: 10 minutes */
static uint64_t *tl_max_ns;
static uint32_t *tl_count;
static int64_t tl_origin_ns; /* CLOCK_REALTIME start of the window */
static volatile sig_atomic_t stop_flag;

static int64_t now_ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(error_msg, sizeof(error_msg), fmt, ap);
	va_end(ap);
	for (char *p = error_msg; *p; p++)
		if (*p == '"' || *p == '\\' || *p == '\n')
			*p = ' ';
	fprintf(stderr, "loadgen: %s\n", error_msg);
	printf("RESULT {\"error\": \"%s\", \"calls\": %d}\n", error_msg, opt.calls);
	fflush(stdout);
	exit(2);
}

static int parse_hostport(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *c = strrchr(s, ':');
	if (!c || (size_t)(c - s) >= sizeof(host))
		return -1;
	memcpy(host, s, c - s);
	host[c - s] = 0;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons(atoi(c + 1));
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int make_media_socket(struct sockaddr_in *out)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		die("socket: %s", strerror(errno));
	int big = 64 << 20, one = 1;
	/* Root may exceed rmem_max; fall back to the capped option otherwise. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one));
	struct sockaddr_in sa = {.sin_family = AF_INET};
	inet_pton(AF_INET, opt.bind_ip, &sa.sin_addr);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("bind media socket: %s", strerror(errno));
	socklen_t sl = sizeof(*out);
	getsockname(fd, (struct sockaddr *)out, &sl);
	return fd;
}

/* ---------------------------------------------------------------- control */

static void send_cmd(int c)
{
	struct call *k = &calls[c];
	char buf[512], ip[2][32];
	int n = 0;
	unsigned seq = (unsigned)c * 4 + k->stage;
	inet_ntop(AF_INET, &caller_sa[c % opt.socks].sin_addr, ip[0], sizeof(ip[0]));
	inet_ntop(AF_INET, &callee_sa[c % opt.socks].sin_addr, ip[1], sizeof(ip[1]));
	switch (k->stage) {
	case ST_U: /* offer: caller's address, from-tag with media index */
		n = snprintf(buf, sizeof(buf), "%d_%u U %s-%d %s %d ft%d;1", (int)getpid(), seq,
			     opt.prefix, c, ip[0], ntohs(caller_sa[c % opt.socks].sin_port), c);
		break;
	case ST_L: /* answer: callee's address, tags in dialog order */
		n = snprintf(buf, sizeof(buf), "%d_%u L %s-%d %s %d ft%d;1 tt%d;1", (int)getpid(),
			     seq, opt.prefix, c, ip[1], ntohs(callee_sa[c % opt.socks].sin_port), c,
			     c);
		break;
	case ST_D: /* Kamailio deletes without media index (prefix rule) */
		n = snprintf(buf, sizeof(buf), "%d_%u D %s-%d ft%d tt%d", (int)getpid(), seq,
			     opt.prefix, c, c, c);
		break;
	case ST_DI:
		n = snprintf(buf, sizeof(buf), "%d_%u D %s-%d ft%d;1 tt%d;1", (int)getpid(), seq,
			     opt.prefix, c, c, c);
		break;
	}
	if (send(ctl_fd, buf, n, 0) < 0 && errno != ECONNREFUSED)
		fprintf(stderr, "loadgen: control send: %s\n", strerror(errno));
	k->pending = 1;
	k->sent_at = now_ns(CLOCK_MONOTONIC);
}

/* Returns 1 when the call finished this phase, 0 if more commands follow. */
static int handle_reply(int c, const char *body)
{
	struct call *k = &calls[c];
	k->pending = 0;
	k->tries = 0;
	if (k->stage == ST_U || k->stage == ST_L) {
		char a[64] = "", p[16] = "";
		int nt = sscanf(body, "%15s %63s", p, a);
		long port = nt >= 1 ? strtol(p, NULL, 10) : 0;
		if (port < 1 || port > 65535) {
			ctl_errors++;
			k->failed = 1;
			snprintf(error_msg, sizeof(error_msg), "%s for call %d answered '%s'",
				 k->stage == ST_U ? "U" : "L", c, p);
			return 1;
		}
		struct sockaddr_in sa = opt.ctl;
		if (nt >= 2 && inet_pton(AF_INET, a, &sa.sin_addr) != 1)
			sa.sin_addr = opt.ctl.sin_addr;
		sa.sin_port = htons((uint16_t)port);
		/* A reply that echoes our own endpoint means the relay is bypassed. */
		struct sockaddr_in *own =
			k->stage == ST_U ? &caller_sa[c % opt.socks] : &callee_sa[c % opt.socks];
		if (!opt.direct && sa.sin_port == own->sin_port &&
		    sa.sin_addr.s_addr == own->sin_addr.s_addr) {
			ctl_errors++;
			k->failed = 1;
			snprintf(error_msg, sizeof(error_msg),
				 "%s reply echoes the request's own address (%s %ld): relay bypassed",
				 k->stage == ST_U ? "U" : "L", a, port);
			return 1;
		}
		if (k->stage == ST_U) {
			k->to_caller_via = sa; /* callee -> relay port facing the callee */
			k->stage = ST_L;
			send_cmd(c);
			return 0;
		}
		k->to_callee_via = sa; /* caller -> relay port facing the caller */
		k->done = 1;
		return 1;
	}
	/* D */
	if (body[0] == 'E' && k->stage == ST_D) {
		d_fallbacks++;
		k->stage = ST_DI;
		send_cmd(c);
		return 0;
	}
	if (body[0] == 'E')
		d_failed++;
	k->done = 1;
	return 1;
}

/* Drive all calls through a control phase (setup or teardown) with a window
 * of outstanding commands and retransmission with the same cookie. */
static int control_phase(int first_stage)
{
	int next = 0, active = 0, finished = 0;
	char buf[2048];
	for (int c = 0; c < opt.calls; c++) {
		calls[c].stage = first_stage;
		calls[c].pending = calls[c].done = calls[c].failed = calls[c].tries = 0;
	}
	while (finished < opt.calls && !stop_flag) {
		while (active < opt.window && next < opt.calls) {
			send_cmd(next++);
			active++;
		}
		struct pollfd pfd = {.fd = ctl_fd, .events = POLLIN};
		int r = poll(&pfd, 1, 5);
		if (r > 0) {
			for (;;) {
				ssize_t n = recv(ctl_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
				if (n < 0)
					break;
				buf[n] = 0;
				char *sp = strchr(buf, ' ');
				char *us = strchr(buf, '_');
				if (!sp || !us || us > sp)
					continue;
				if (atoi(buf) != (int)getpid())
					continue;
				unsigned seq = strtoul(us + 1, NULL, 10);
				int c = seq / 4;
				if (c >= opt.calls || !calls[c].pending || calls[c].stage != seq % 4 ||
				    calls[c].done)
					continue; /* stale duplicate */
				char *nl = strchr(sp + 1, '\n');
				if (nl)
					*nl = 0;
				if (handle_reply(c, sp + 1)) {
					active--;
					finished++;
				}
			}
		}
		int64_t t = now_ns(CLOCK_MONOTONIC);
		for (int c = 0; c < next; c++) {
			struct call *k = &calls[c];
			if (!k->pending || t - k->sent_at < (int64_t)opt.ctl_timeout_ms * 1000000)
				continue;
			if (++k->tries >= opt.ctl_tries) {
				k->pending = 0;
				k->failed = 1;
				ctl_errors++;
				snprintf(error_msg, sizeof(error_msg),
					 "no reply to control command (call %d stage %d) after %d tries",
					 c, k->stage, k->tries);
				active--;
				finished++;
				continue;
			}
			ctl_retrans++;
			send_cmd(c);
		}
	}
	int failed = 0;
	for (int c = 0; c < opt.calls; c++)
		failed += calls[c].failed;
	return failed;
}

/* ---------------------------------------------------------------- media */

static void record_rx(struct mmsghdr *m, int n, int sockidx, uint8_t bufs[][MAX_PAYLOAD + 64])
{
	for (int i = 0; i < n; i++) {
		struct msghdr *h = &m[i].msg_hdr;
		int64_t rx = -1;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm; cm = CMSG_NXTHDR(h, cm)) {
			if (cm->cmsg_level != SOL_SOCKET)
				continue;
			if (cm->cmsg_type == SO_TIMESTAMPNS) {
				struct timespec ts;
				memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
				rx = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
			} else if (cm->cmsg_type == SO_RXQ_OVFL && sockidx < 1024) {
				uint32_t d;
				memcpy(&d, CMSG_DATA(cm), sizeof(d));
				if (!rxq_seen[sockidx]) {
					rxq_seen[sockidx] = 1;
					rxq_ovfl_first[sockidx] = d;
				}
				rxq_ovfl_last[sockidx] = d;
			}
		}
		rx_total++;
		if (window_open)
			rx_window_arrivals++;
		if (m[i].msg_len < RTP_HDR + sizeof(struct payload)) {
			rx_bad++;
			continue;
		}
		struct payload p;
		memcpy(&p, bufs[i] + RTP_HDR, sizeof(p));
		if (p.magic != MAGIC || p.call >= (uint32_t)opt.calls) {
			rx_bad++;
			continue;
		}
		if (!p.in_window)
			continue;
		if (rx < 0)
			rx = now_ns(CLOCK_REALTIME);
		int64_t lat = rx - (int64_t)p.ts_ns;
		if (lat < 0)
			lat = 0;
		rx_meas++;
		lat_sum_ns += lat;
		if (tl_max_ns) {
			int64_t b = ((int64_t)p.ts_ns - tl_origin_ns) / 100000000LL;
			if (b >= 0 && b < TL_MAX) {
				tl_count[b]++;
				if ((uint64_t)lat > tl_max_ns[b])
					tl_max_ns[b] = (uint64_t)lat;
			}
		}
		if ((uint64_t)lat > lat_max_ns)
			lat_max_ns = lat;
		uint64_t us = lat / 1000;
		if (us < HIST_US)
			hist[us]++;
		else
			hist_over++;
	}
}

static struct mmsghdr rx_m[RX_BATCH];
static struct iovec rx_iov[RX_BATCH];
static uint8_t rx_buf[RX_BATCH][MAX_PAYLOAD + 64];
static char rx_ctl[RX_BATCH][256];

static void drain_socket(int fd, int sockidx)
{
	for (;;) {
		for (int i = 0; i < RX_BATCH; i++) {
			rx_iov[i].iov_base = rx_buf[i];
			rx_iov[i].iov_len = sizeof(rx_buf[i]);
			memset(&rx_m[i].msg_hdr, 0, sizeof(rx_m[i].msg_hdr));
			rx_m[i].msg_hdr.msg_iov = &rx_iov[i];
			rx_m[i].msg_hdr.msg_iovlen = 1;
			rx_m[i].msg_hdr.msg_control = rx_ctl[i];
			rx_m[i].msg_hdr.msg_controllen = sizeof(rx_ctl[i]);
		}
		int n = recvmmsg(fd, rx_m, RX_BATCH, MSG_DONTWAIT, NULL);
		if (n <= 0)
			return;
		record_rx(rx_m, n, sockidx, rx_buf);
		if (n < RX_BATCH)
			return;
	}
}

/* Per slot and direction: call ids grouped by socket index. */
struct slotlist {
	int *ids;
	int n;
};

static struct mmsghdr *tx_m;
static struct iovec *tx_iov;
static uint8_t (*tx_buf)[RTP_HDR + MAX_PAYLOAD];

static void send_list(struct slotlist *sl, int dir)
{
	int i = 0;
	while (i < sl->n) {
		int first = sl->ids[i];
		int sock = first % opt.socks;
		int fd = dir == 0 ? caller_fd[sock] : callee_fd[sock];
		int cnt = 0;
		while (i + cnt < sl->n && cnt < opt.tx_batch && sl->ids[i + cnt] % opt.socks == sock)
			cnt++;
		int64_t ts = now_ns(CLOCK_REALTIME);
		for (int j = 0; j < cnt; j++) {
			int c = sl->ids[i + j];
			struct call *k = &calls[c];
			uint8_t *b = tx_buf[j];
			uint32_t seq = k->seq[dir]++;
			uint32_t ssrc = htonl((uint32_t)c * 2 + dir + 0x1000);
			uint32_t rts = htonl(seq * 160);
			b[0] = 0x80;
			b[1] = 0; /* PCMU */
			b[2] = (seq >> 8) & 0xff;
			b[3] = seq & 0xff;
			memcpy(b + 4, &rts, 4);
			memcpy(b + 8, &ssrc, 4);
			struct payload p = {.magic = MAGIC,
					    .call = (uint32_t)c,
					    .dir = (uint32_t)dir,
					    .seq = seq,
					    .ts_ns = (uint64_t)ts,
					    .in_window = (uint32_t)in_window_flag};
			memcpy(b + RTP_HDR, &p, sizeof(p));
			tx_iov[j].iov_base = b;
			tx_iov[j].iov_len = RTP_HDR + opt.payload;
			memset(&tx_m[j].msg_hdr, 0, sizeof(tx_m[j].msg_hdr));
			tx_m[j].msg_hdr.msg_iov = &tx_iov[j];
			tx_m[j].msg_hdr.msg_iovlen = 1;
			tx_m[j].msg_hdr.msg_name = dir == 0 ? &k->to_callee_via : &k->to_caller_via;
			tx_m[j].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
		}
		int off = 0;
		while (off < cnt) {
			int r = sendmmsg(fd, tx_m + off, cnt - off, 0);
			if (r <= 0) {
				if (r < 0 && errno == EINTR)
					continue;
				/* Skip the datagram that failed (e.g. an ICMP error queued). */
				tx_errors++;
				off++;
				continue;
			}
			tx_total += r;
			if (in_window_flag)
				tx_meas += r;
			off += r;
		}
		i += cnt;
	}
}

static void run_media(void)
{
	int S = (int)((1000000LL / opt.rate) / opt.tick_us);
	if (S < 1)
		S = 1;
	struct slotlist *slots[2];
	for (int d = 0; d < 2; d++) {
		slots[d] = calloc(S, sizeof(struct slotlist));
		for (int s = 0; s < S; s++)
			slots[d][s].ids = malloc(sizeof(int) * (opt.calls / S + 2));
	}
	/* Spread calls over the period; the reverse direction is half a period
	 * later.  Within a slot, group by socket so sendmmsg batches are long. */
	for (int k = 0; k < opt.socks; k++)
		for (int c = k; c < opt.calls; c += opt.socks) {
			int s0 = (int)(((int64_t)c * S) / opt.calls) % S;
			int s1 = (s0 + S / 2) % S;
			slots[0][s0].ids[slots[0][s0].n++] = c;
			slots[1][s1].ids[slots[1][s1].n++] = c;
		}
	tx_m = calloc(opt.tx_batch, sizeof(*tx_m));
	tx_iov = calloc(opt.tx_batch, sizeof(*tx_iov));
	tx_buf = calloc(opt.tx_batch, sizeof(*tx_buf));

	int ep = epoll_create1(0);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	struct itimerspec its = {.it_interval = {0, opt.tick_us * 1000L},
				 .it_value = {0, opt.tick_us * 1000L}};
	timerfd_settime(tfd, 0, &its, NULL);
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0xffffffffu};
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
	/* The media sockets are not watched: they are drained on every tick.  With
	 * nobody waiting on them, the relay's sends do not have to wake this
	 * process (as with a peer across a network), and reads come in batches;
	 * latency is taken from kernel receive time stamps, so it is unaffected. */

	int64_t tick_ns = (int64_t)opt.tick_us * 1000;
	int64_t t0 = now_ns(CLOCK_MONOTONIC);
	int64_t t_win = t0 + (int64_t)(opt.warmup * 1e9);
	int64_t t_end = t_win + (int64_t)(opt.duration * 1e9);
	int64_t t_stop = t_end + (int64_t)(opt.drain * 1e9);
	int64_t next_tick = t0;
	uint64_t tick_idx = 0;
	double cpu0 = 0, cpu1 = 0;
	int64_t w0 = 0, w1 = 0;
	int phase = 0; /* 0 warmup, 1 window, 2 drain */
	struct epoll_event evs[4];
	uint64_t late_ticks = 0;
	int64_t max_late_ns = 0;

	for (;;) {
		int64_t t = now_ns(CLOCK_MONOTONIC);
		if (phase == 0 && t >= t_win) {
			phase = 1;
			cpu0 = cpu_seconds();
			w0 = t;
			tl_origin_ns = now_ns(CLOCK_REALTIME);
			in_window_flag = 1;
			window_open = 1;
			printf("MEASURE_START %.6f\n", now_ns(CLOCK_REALTIME) / 1e9);
			fflush(stdout);
		}
		if (phase == 1 && t >= t_end) {
			phase = 2;
			in_window_flag = 0;
			window_open = 0;
			cpu1 = cpu_seconds();
			w1 = t;
			printf("MEASURE_END %.6f\n", now_ns(CLOCK_REALTIME) / 1e9);
			fflush(stdout);
		}
		if (t >= t_stop || stop_flag)
			break;
		if (phase < 2) {
			int nt = 0;
			if (t - next_tick > max_late_ns)
				max_late_ns = t - next_tick;
			while (next_tick <= t) {
				int s = (int)(tick_idx % (uint64_t)S);
				send_list(&slots[0][s], 0);
				send_list(&slots[1][s], 1);
				tick_idx++;
				next_tick += tick_ns;
				nt++;
			}
			if (nt > 1)
				late_ticks += nt - 1;
		}
		for (int k = 0; k < opt.socks; k++) {
			drain_socket(caller_fd[k], k);
			drain_socket(callee_fd[k], opt.socks + k);
		}
		int n = epoll_wait(ep, evs, 4, 2);
		for (int i = 0; i < n; i++) {
			uint64_t exp;
			if (read(tfd, &exp, sizeof(exp)) < 0) {
			}
		}
	}
	if (w1 == 0) {
		cpu1 = cpu_seconds();
		w1 = now_ns(CLOCK_MONOTONIC);
	}
	close(tfd);
	close(ep);

	/* percentiles */
	double pct[4] = {50, 90, 99, 99.9};
	double val[4] = {0};
	for (int q = 0; q < 4; q++) {
		uint64_t want = (uint64_t)((rx_meas * pct[q]) / 100.0 + 0.999999);
		if (want == 0)
			want = 1;
		uint64_t acc = 0;
		val[q] = -1;
		for (int u = 0; u < HIST_US; u++) {
			acc += hist[u];
			if (acc >= want) {
				val[q] = u + 0.5;
				break;
			}
		}
		if (val[q] < 0)
			val[q] = lat_max_ns / 1000.0;
	}
	uint64_t gen_drops = 0;
	for (int k = 0; k < 2 * opt.socks && k < 1024; k++)
		if (rxq_seen[k])
			gen_drops += rxq_ovfl_last[k] - rxq_ovfl_first[k];
	double wall = (w1 - w0) / 1e9;
	double gcpu = cpu1 - cpu0;
	int64_t lost = (int64_t)tx_meas - (int64_t)rx_meas;
	if (tl_max_ns)
		for (int b = 0; b < TL_MAX && b * 0.1 < opt.duration; b++)
			fprintf(stderr, "TL %6.1f s  rx %7u  max %9.3f ms\n", b * 0.1, tl_count[b],
				tl_max_ns[b] / 1e6);
	printf("RESULT {\"calls\": %d, \"rate\": %d, \"window_s\": %.3f, \"tx\": %" PRIu64
	       ", \"rx\": %" PRIu64 ", \"lost\": %" PRId64 ", \"loss_pct\": %.5f"
	       ", \"lat_p50_us\": %.1f, \"lat_p90_us\": %.1f, \"lat_p99_us\": %.1f"
	       ", \"lat_p999_us\": %.1f, \"lat_max_us\": %.1f, \"lat_mean_us\": %.1f"
	       ", \"rx_window_arrivals\": %" PRIu64 ", \"tx_total\": %" PRIu64
	       ", \"rx_total\": %" PRIu64 ", \"tx_errors\": %" PRIu64 ", \"rx_bad\": %" PRIu64
	       ", \"gen_rx_drops\": %" PRIu64 ", \"gen_cpu_s\": %.3f, \"gen_busy\": %.4f"
	       ", \"late_ticks\": %" PRIu64 ", \"max_late_us\": %.0f, \"hist_over\": %" PRIu64 "",
	       opt.calls, opt.rate, wall, tx_meas, rx_meas, lost,
	       tx_meas ? 100.0 * (double)lost / (double)tx_meas : 0.0, val[0], val[1], val[2],
	       val[3], lat_max_ns / 1000.0, rx_meas ? lat_sum_ns / 1000.0 / rx_meas : 0.0,
	       rx_window_arrivals, tx_total, rx_total, tx_errors, rx_bad, gen_drops, gcpu,
	       wall > 0 ? gcpu / wall : 0.0, late_ticks, max_late_ns / 1000.0, hist_over);
}

/* Direct socket-to-socket loopback latency, as a floor for the figures. */
static void calibrate(double *p50, double *p99)
{
	int n = 2000;
	uint64_t *v = calloc(n, sizeof(uint64_t));
	int got = 0;
	for (int i = 0; i < n; i++) {
		uint8_t b[RTP_HDR + 160] = {0x80};
		struct payload p = {.magic = MAGIC, .ts_ns = (uint64_t)now_ns(CLOCK_REALTIME)};
		memcpy(b + RTP_HDR, &p, sizeof(p));
		sendto(caller_fd[0], b, sizeof(b), 0, (struct sockaddr *)&callee_sa[0],
		       sizeof(callee_sa[0]));
		struct pollfd pfd = {.fd = callee_fd[0], .events = POLLIN};
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		{
			uint8_t rb[2048];
			char cb[256];
			struct iovec io = {rb, sizeof(rb)};
			struct msghdr h = {.msg_iov = &io,
					   .msg_iovlen = 1,
					   .msg_control = cb,
					   .msg_controllen = sizeof(cb)};
			if (recvmsg(callee_fd[0], &h, MSG_DONTWAIT) < 0)
				continue;
			for (struct cmsghdr *cm = CMSG_FIRSTHDR(&h); cm; cm = CMSG_NXTHDR(&h, cm))
				if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_TIMESTAMPNS) {
					struct timespec ts;
					memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
					struct payload q;
					memcpy(&q, rb + RTP_HDR, sizeof(q));
					int64_t l = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec -
						    (int64_t)q.ts_ns;
					v[got++] = l < 0 ? 0 : (uint64_t)l;
				}
		}
		if (i % 100 == 0)
			usleep(1000);
	}
	/* insertion sort: a few thousand values */
	for (int i = 1; i < got; i++) {
		uint64_t x = v[i];
		int j = i - 1;
		while (j >= 0 && v[j] > x) {
			v[j + 1] = v[j];
			j--;
		}
		v[j + 1] = x;
	}
	*p50 = got ? v[got / 2] / 1000.0 : -1;
	*p99 = got ? v[(got * 99) / 100] / 1000.0 : -1;
	free(v);
}

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: loadgen --ctl IP:PORT --calls N [--duration S] [--warmup S] [--drain S]\n"
		"               [--rate PPS] [--payload BYTES] [--socks K] [--bind IP]\n"
		"               [--window W] [--ctl-timeout-ms MS] [--ctl-tries T]\n"
		"               [--tx-batch B] [--tick-us US] [--prefix STR] [--no-teardown]\n"
		"               [--direct]\n"
		"               [--calibrate] [--timeline]\n");
	exit(64);
}

int main(int argc, char **argv)
{
	opt.bind_ip = "127.0.0.1";
	opt.calls = 10;
	opt.duration = 10;
	opt.warmup = 2;
	opt.drain = 1;
	opt.rate = 50;
	opt.payload = 160;
	opt.socks = 1;
	opt.window = 64;
	opt.ctl_timeout_ms = 500;
	opt.ctl_tries = 6;
	opt.tx_batch = 16;
	opt.tick_us = 200;
	opt.teardown = 1;
	snprintf(opt.prefix, sizeof(opt.prefix), "bench%d", (int)getpid());
	int have_ctl = 0;
	static struct option lo[] = {{"ctl", 1, 0, 'c'},	    {"calls", 1, 0, 'n'},
				     {"duration", 1, 0, 'd'},	    {"warmup", 1, 0, 'w'},
				     {"drain", 1, 0, 'r'},	    {"rate", 1, 0, 'R'},
				     {"payload", 1, 0, 'P'},	    {"socks", 1, 0, 'k'},
				     {"bind", 1, 0, 'b'},	    {"window", 1, 0, 'W'},
				     {"ctl-timeout-ms", 1, 0, 'T'}, {"ctl-tries", 1, 0, 't'},
				     {"tx-batch", 1, 0, 'B'},	    {"tick-us", 1, 0, 'i'},
				     {"prefix", 1, 0, 'p'},	    {"no-teardown", 0, 0, 'N'},
				     {"calibrate", 0, 0, 'C'},	    {"timeline", 0, 0, 'L'},
				     {"direct", 0, 0, 'D'},
				     {"help", 0, 0, 'h'},
				     {0, 0, 0, 0}};
	int ch;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'c':
			if (parse_hostport(optarg, &opt.ctl) < 0)
				usage();
			have_ctl = 1;
			break;
		case 'n': opt.calls = atoi(optarg); break;
		case 'd': opt.duration = atof(optarg); break;
		case 'w': opt.warmup = atof(optarg); break;
		case 'r': opt.drain = atof(optarg); break;
		case 'R': opt.rate = atoi(optarg); break;
		case 'P': opt.payload = atoi(optarg); break;
		case 'k': opt.socks = atoi(optarg); break;
		case 'b': opt.bind_ip = optarg; break;
		case 'W': opt.window = atoi(optarg); break;
		case 'T': opt.ctl_timeout_ms = atoi(optarg); break;
		case 't': opt.ctl_tries = atoi(optarg); break;
		case 'B': opt.tx_batch = atoi(optarg); break;
		case 'i': opt.tick_us = atoi(optarg); break;
		case 'p': snprintf(opt.prefix, sizeof(opt.prefix), "%s", optarg); break;
		case 'N': opt.teardown = 0; break;
		case 'C': opt.calibrate = 1; break;
		case 'L': opt.timeline = 1; break;
		case 'D': opt.direct = 1; break;
		default: usage();
		}
	}
	if (!have_ctl || opt.calls < 1 || opt.rate < 1 || opt.socks < 1 || opt.socks > 512 ||
	    opt.payload < (int)sizeof(struct payload) || opt.payload > MAX_PAYLOAD ||
	    opt.tx_batch < 1 || opt.tick_us < 100 || opt.window < 1)
		usage();
	if (opt.socks > opt.calls)
		opt.socks = opt.calls;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);

	hist = calloc(HIST_US, sizeof(uint32_t));
	if (opt.timeline) {
		tl_max_ns = calloc(TL_MAX, sizeof(uint64_t));
		tl_count = calloc(TL_MAX, sizeof(uint32_t));
	}
	calls = calloc(opt.calls, sizeof(*calls));
	caller_fd = calloc(opt.socks, sizeof(int));
	callee_fd = calloc(opt.socks, sizeof(int));
	caller_sa = calloc(opt.socks, sizeof(*caller_sa));
	callee_sa = calloc(opt.socks, sizeof(*callee_sa));
	for (int k = 0; k < opt.socks; k++) {
		caller_fd[k] = make_media_socket(&caller_sa[k]);
		callee_fd[k] = make_media_socket(&callee_sa[k]);
	}
	ctl_fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (ctl_fd < 0 || connect(ctl_fd, (struct sockaddr *)&opt.ctl, sizeof(opt.ctl)) < 0)
		die("control socket: %s", strerror(errno));
	int big = 8 << 20;
	setsockopt(ctl_fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));

	double lb50 = -1, lb99 = -1;
	if (opt.calibrate)
		calibrate(&lb50, &lb99);

	int64_t ts0 = now_ns(CLOCK_MONOTONIC);
	int failed = control_phase(ST_U);
	double setup_s = (now_ns(CLOCK_MONOTONIC) - ts0) / 1e9;
	fprintf(stderr, "loadgen: %d calls set up in %.2f s (%" PRIu64 " retransmits)\n",
		opt.calls - failed, setup_s, ctl_retrans);
	if (failed) {
		char msg[400];
		snprintf(msg, sizeof(msg), "%d of %d calls failed to set up: %s", failed,
			 opt.calls, error_msg);
		if (opt.teardown)
			control_phase(ST_D);
		die("%s", msg);
	}
	run_media();
	double td_s = 0;
	if (opt.teardown) {
		int64_t t1 = now_ns(CLOCK_MONOTONIC);
		control_phase(ST_D);
		td_s = (now_ns(CLOCK_MONOTONIC) - t1) / 1e9;
	}
	printf(", \"setup_s\": %.3f, \"teardown_s\": %.3f, \"ctl_retrans\": %" PRIu64
	       ", \"ctl_errors\": %" PRIu64 ", \"d_fallbacks\": %" PRIu64 ", \"d_failed\": %" PRIu64
	       ", \"socks\": %d, \"loopback_p50_us\": %.1f, \"loopback_p99_us\": %.1f}\n",
	       setup_s, td_s, ctl_retrans, ctl_errors, d_fallbacks, d_failed, opt.socks, lb50,
	       lb99);
	fflush(stdout);
	return 0;
}
