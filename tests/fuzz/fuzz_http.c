/* libFuzzer target: the agent's HTTP response parser (client/http.c), fed by an API server or
 * anything on the path to it (untrusted). The input is cut at a split point taken from its
 * first byte, so both whole and split deliveries are explored; then EOF. Whatever the input:
 * no crash, a complete response has a NUL-terminated body of at most HTTP_BODY_MAX bytes and a
 * status in 200..599, and feeding the same bytes one at a time gives the same outcome. */
#include "http.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run(const uint8_t *d, size_t n, size_t split, struct http_parser *p)
{
	char err[200];
	int rc = http_parser_input(p, d, split, false, err, sizeof(err));
	if (rc == 0)
		rc = http_parser_input(p, d + split, n - split, false, err, sizeof(err));
	if (rc == 0)
		rc = http_parser_input(p, NULL, 0, true, err, sizeof(err));
	if (rc < 0 && !err[0])
		abort(); /* every error says why */
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t split = data[0] % size;
	data++;
	size--;
	if (split > size)
		split = size;
	struct http_parser p;
	http_parser_init(&p, false);
	int rc = run(data, size, split, &p);
	if (rc == 1) {
		if (!p.body || p.body_len > HTTP_BODY_MAX || p.body[p.body_len] != 0 ||
		    p.status < 200 || p.status > 599)
			abort();
	}
	/* byte by byte: same verdict, same body (small inputs only, to keep runs fast) */
	if (size <= 4096) {
		struct http_parser q;
		http_parser_init(&q, false);
		char err[200];
		int r2 = 0;
		for (size_t i = 0; i < size && r2 == 0; i++)
			r2 = http_parser_input(&q, data + i, 1, false, err, sizeof(err));
		if (r2 == 0)
			r2 = http_parser_input(&q, NULL, 0, true, err, sizeof(err));
		if ((r2 == 1) != (rc == 1))
			abort();
		if (rc == 1 && (q.body_len != p.body_len || memcmp(q.body, p.body, p.body_len) ||
				q.status != p.status))
			abort();
		http_parser_free(&q);
	}
	http_parser_free(&p);
	return 0;
}
