/* The bpf data plane's start-up self-test: before the plane is trusted with players, one pair
 * on loopback goes through it for real (bytes queued before the join, both directions, both
 * FINs), and afterwards the maps must be empty and the verdict counters must show every byte
 * redirected in the kernel. Runs on the caller's thread while the plane's thread serves the
 * pair. */
#include "dp_bpf_int.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SELFTEST_MS 3000	/* whole self-test budget */
#define SELFTEST_KEY UINT64_MAX /* tunnel key of the self-test pair */

static int st_wait(int fd, short ev, uint64_t deadline)
{
	uint64_t now = mono_ms();
	if (now >= deadline)
		return -ETIMEDOUT;
	struct pollfd pfd = {.fd = fd, .events = ev};
	int n = poll(&pfd, 1, (int)(deadline - now));
	return n > 0 ? 0 : n == 0 ? -ETIMEDOUT : -errno;
}

static int st_send(int fd, const uint8_t *buf, size_t len, uint64_t deadline)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN) {
			int rc = st_wait(fd, POLLOUT, deadline);
			if (rc)
				return rc;
			continue;
		}
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read exactly len bytes equal to want, then EOF. */
static int st_expect(int fd, const uint8_t *want, size_t len, uint64_t deadline, const char *what)
{
	uint8_t buf[4096];
	size_t got = 0;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN) {
			int rc = st_wait(fd, POLLIN, deadline);
			if (rc) {
				pr_warn("data plane bpf self-test: %s: %zu of %zu bytes, then %s", what,
					got, len, strerror(-rc));
				return rc;
			}
			continue;
		}
		if (n < 0) {
			pr_warn("data plane bpf self-test: %s: %s", what, strerror(errno));
			return -errno;
		}
		if (n == 0)
			break;
		if (got + (size_t)n > len || memcmp(buf, want + got, (size_t)n)) {
			pr_warn("data plane bpf self-test: %s: bytes differ from what was sent "
				"(offset %zu, %zd bytes)", what, got, n);
			return -EBADMSG;
		}
		got += (size_t)n;
	}
	if (got != len) {
		pr_warn("data plane bpf self-test: %s: %zu bytes then EOF, expected %zu", what, got,
			len);
		return -EBADMSG;
	}
	return 0;
}

static int st_pair(int lfd, const struct sockaddr_in *sa, int *client, int *server)
{
	*client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*client < 0)
		return -errno;
	if (connect(*client, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
		return -errno;
	*server = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	return *server < 0 ? -errno : 0;
}

int bp_selftest(struct bp_plane *b)
{
	uint64_t deadline = mono_ms() + SELFTEST_MS;
	int lfd = -1, pc = -1, pr = -1, ac = -1, ar = -1, rc;
	struct dp_acct *hold = NULL;
	uint8_t up[6000], down[5000];
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	for (size_t i = 0; i < sizeof(up); i++)
		up[i] = (uint8_t)(i * 7 + 1);
	for (size_t i = 0; i < sizeof(down); i++)
		down[i] = (uint8_t)(i * 13 + 5);

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0) {
		rc = -errno;
		pr_warn("data plane bpf self-test: loopback listener: %s", strerror(-rc));
		goto out;
	}
	if ((rc = st_pair(lfd, &sa, &pc, &pr)) || (rc = st_pair(lfd, &sa, &ac, &ar))) {
		pr_warn("data plane bpf self-test: loopback connections: %s", strerror(-rc));
		goto out;
	}
	/* the "handshake" is queued before the join, as the relay's peeked one is */
	if ((rc = st_send(pc, up, 1000, deadline)))
		goto out;
	if (poll(&(struct pollfd){.fd = pr, .events = POLLIN}, 1, 1000) != 1) {
		rc = -ETIMEDOUT;
		goto out;
	}
	/* held like the relay holds a tunnel: its counts survive the pair, to be checked below */
	if (!(hold = dp_acct_get(&b->acct, SELFTEST_KEY, &rc)))
		goto out;
	rc = bp_enqueue(b, pr, ar, SELFTEST_KEY, true);
	pr = ar = -1;
	if (rc)
		goto out;
	/* a socket that already has its FIN is refused by the map (the pair would be relayed with
	 * splice(2)): half-close only once both are in */
	for (uint64_t n = 0; n < 2;) {
		if ((rc = bp_map_count(b->socks_fd, &n)))
			goto out;
		if (mono_ms() >= deadline) {
			pr_warn("data plane bpf self-test: the pair never entered the sockhash");
			rc = -ETIMEDOUT;
			goto out;
		}
		if (n < 2)
			usleep(200);
	}
	if ((rc = st_send(pc, up + 1000, sizeof(up) - 1000, deadline)) ||
	    (rc = st_send(ac, down, sizeof(down), deadline))) {
		pr_warn("data plane bpf self-test: send: %s", strerror(-rc));
		goto out;
	}
	shutdown(pc, SHUT_WR);
	if ((rc = st_expect(ac, up, sizeof(up), deadline, "player -> agent")))
		goto out;
	shutdown(ac, SHUT_WR);
	if ((rc = st_expect(pc, down, sizeof(down), deadline, "agent -> player")))
		goto out;
	close(pc);
	close(ac);
	pc = ac = -1;
	while (atomic_load(&b->n_pairs) && mono_ms() < deadline)
		usleep(1000);
	if (atomic_load(&b->n_pairs)) {
		pr_warn("data plane bpf self-test: the pair was not released after both FINs");
		rc = -ETIMEDOUT;
		goto out;
	}
	/* the tunnel's accounting saw every byte of both ways, and no pair is left on it */
	struct dvv_tunnel_bytes tb = {0};
	uint64_t ua, up_ = 0;
	if ((rc = dp_acct_read(&b->acct, SELFTEST_KEY, &ua, &up_)))
		goto out;
	if (bpf_map_lookup_elem(b->tunnels_fd, &(uint64_t){SELFTEST_KEY}, &tb) < 0) {
		rc = -errno;
		pr_warn("data plane bpf self-test: the held tunnel has no dvv_tunnels element");
		goto out;
	}
	if (tb.to_agent + ua != sizeof(up) || tb.to_player + up_ != sizeof(down) ||
	    atomic_load(&hold->pairs)) {
		pr_warn("data plane bpf self-test: tunnel counted %llu bytes to the agent and %llu to "
			"the player (expected %zu and %zu), %d pair(s) left",
			(unsigned long long)(tb.to_agent + ua), (unsigned long long)(tb.to_player + up_),
			sizeof(up), sizeof(down), (int)atomic_load(&hold->pairs));
		rc = -EBADMSG;
		goto out;
	}
	dp_acct_put(&b->acct, hold);
	hold = NULL;
	uint64_t ns, ntg, nc, nt;
	if ((rc = bp_map_count(b->socks_fd, &ns)) || (rc = bp_map_count(b->targets_fd, &ntg)) ||
	    (rc = bp_map_count(b->conns_fd, &nc)) || (rc = bp_map_count(b->tunnels_fd, &nt)))
		goto out;
	if (ns || ntg || nc || nt) {
		pr_warn("data plane bpf self-test: maps not empty after teardown (socks %llu, "
			"targets %llu, conns %llu, tunnels %llu)", (unsigned long long)ns,
			(unsigned long long)ntg, (unsigned long long)nc, (unsigned long long)nt);
		rc = -EUCLEAN;
		goto out;
	}
	struct dvv_verdict_count v[DVV_V_MAX];
	if ((rc = bp_verdicts_read(b, v)))
		goto out;
	if (v[DVV_V_REDIRECT].bytes != sizeof(up) + sizeof(down)) {
		pr_warn("data plane bpf self-test: %llu bytes redirected in the kernel, expected %zu",
			(unsigned long long)v[DVV_V_REDIRECT].bytes, sizeof(up) + sizeof(down));
		rc = -EBADMSG;
	}
out:
	dp_acct_put(&b->acct, hold);
	for (int *fd = (int[]){lfd, pc, pr, ac, ar}, i = 0; i < 5; i++)
		if (fd[i] >= 0)
			close(fd[i]);
	return rc;
}
