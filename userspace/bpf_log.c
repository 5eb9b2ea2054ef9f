/* libbpf -> relay log. See bpf_log.h. */
#include "bpf_log.h"
#include "log.h"

#include <bpf/libbpf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_LINES 40 /* of an over-long message: the program and where the walk began */

__attribute__((format(printf, 2, 0))) static int libbpf_log(enum libbpf_print_level level,
							    const char *fmt, va_list ap)
{
	enum log_level lv = level == LIBBPF_WARN ? LOG_INFO : LOG_DEBUG;
	char small[1024], *buf = small;
	va_list ap2;

	if (lv > log_get_level())
		return 0;
	va_copy(ap2, ap);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	if (n < 0) {
		va_end(ap2);
		return 0;
	}
	if ((size_t)n >= sizeof(small)) {
		/* a verifier log: whole, or the rejection reason at its end is lost */
		if ((buf = malloc((size_t)n + 1)))
			vsnprintf(buf, (size_t)n + 1, fmt, ap2);
		else
			buf = small; /* out of memory: the truncated head is all we have */
	}
	va_end(ap2);

	int lines = 0;
	for (const char *p = buf; *p; p++)
		lines += *p == '\n';
	lines += buf[0] && buf[strlen(buf) - 1] != '\n';
	int skip_from = lines > BPF_LOG_MAX_LINES ? HEAD_LINES : lines;
	int skip_to = lines > BPF_LOG_MAX_LINES ? lines - (BPF_LOG_MAX_LINES - HEAD_LINES) : lines;
	int i = 0;
	for (char *line = buf, *nl; line && *line; line = nl, i++) {
		if ((nl = strchr(line, '\n')))
			*nl++ = 0;
		if (i == skip_from && skip_to > skip_from)
			log_msg(lv, "libbpf: ... %d lines of the verifier log left out ...",
				skip_to - skip_from);
		if ((i < skip_from || i >= skip_to) && *line)
			log_msg(lv, "%s", line);
	}
	if (buf != small)
		free(buf);
	return 0;
}

void bpf_log_install(void)
{
	libbpf_set_print(libbpf_log);
}

const char *bpf_load_hint(int rc)
{
	switch (rc) {
	case -EPERM:
	case -EACCES:
		return "not permitted: the relay needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or "
		       "root), and RLIMIT_MEMLOCK on kernels before 5.11; see docs/operators.md";
	case -EINVAL:
	case -E2BIG:
		return "the kernel refused the program (too old, or the verifier rejected it): "
		       "--log-level info prints the verifier log";
	case -ENOENT:
	case -EOPNOTSUPP:
		return "a BPF feature this relay needs is missing from the kernel (BTF, sockmap or "
		       "XDP support)";
	default:
		return "see the libbpf messages above (--log-level info)";
	}
}
