/* The log line encoder (common/log.c): JSON lines are valid JSON with the right members whatever
 * the message holds (quotes, backslashes, control characters, invalid UTF-8), long messages are
 * cut without breaking an escape or a character, text lines carry the trace id, and trace ids
 * are distinct and never 0. JSON output is checked by parsing it with jansson, not by comparing
 * strings we wrote ourselves. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static const struct timespec when = {.tv_sec = 1796000000, .tv_nsec = 123456789};

/* Build a JSON line and parse it back: returns the object (caller decrefs). */
static json_t *json_line(const char *msg, uint64_t trace, size_t cap)
{
	char *buf = malloc(cap);
	assert_non_null(buf);
	size_t n = log_format_line(buf, cap, LOG_FMT_JSON, &when, "dvv-relay", LOG_WARN, trace, msg);
	assert_true(n > 0 && n < cap);
	assert_int_equal(strlen(buf), n);
	assert_int_equal(buf[n - 1], '\n');
	assert_null(memchr(buf, '\n', n - 1)); /* one line */
	json_error_t err;
	json_t *j = json_loadb(buf, n, 0, &err);
	if (!j)
		fail_msg("not JSON (%s): %s", err.text, buf);
	free(buf);
	return j;
}

static void test_json_members(void **state)
{
	(void)state;
	json_t *j = json_line("tunnel up: a.example", 0x00ab0000000000cdULL, LOG_LINE_MAX);
	assert_string_equal(json_string_value(json_object_get(j, "time")), "2026-11-30T00:53:20.123Z");
	assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
	assert_string_equal(json_string_value(json_object_get(j, "program")), "dvv-relay");
	assert_string_equal(json_string_value(json_object_get(j, "msg")), "tunnel up: a.example");
	assert_string_equal(json_string_value(json_object_get(j, "trace_id")), "00ab0000000000cd");
	assert_int_equal(json_object_size(j), 5);
	json_decref(j);
	/* no trace: no member */
	j = json_line("x", 0, LOG_LINE_MAX);
	assert_null(json_object_get(j, "trace_id"));
	assert_int_equal(json_object_size(j), 4);
	json_decref(j);
}

static void test_json_escaping(void **state)
{
	(void)state;
	const char *msg = "q\"b\\s/n\nr\rt\tbell\x07" "esc\x1b" "del\x7f" "end";
	json_t *j = json_line(msg, 0, LOG_LINE_MAX);
	assert_string_equal(json_string_value(json_object_get(j, "msg")), msg);
	json_decref(j);
	char out[64];
	log_json_escape(out, sizeof(out), "a\x01\x1f\"");
	assert_string_equal(out, "a\\u0001\\u001f\\\"");
}

static void test_json_utf8(void **state)
{
	(void)state;
	/* valid multi-byte characters pass through; invalid bytes become U+FFFD */
	json_t *j = json_line("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 0, LOG_LINE_MAX);
	assert_string_equal(json_string_value(json_object_get(j, "msg")),
			    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	json_decref(j);
	/* lone continuation, overlong '/', surrogate, truncated sequence, 0xff */
	j = json_line("a\x80" "b\xc0\xaf" "c\xed\xa0\x80" "d\xe2\x82" "e\xff", 0, LOG_LINE_MAX);
	const char *m = json_string_value(json_object_get(j, "msg"));
	assert_non_null(m);
	assert_true(strstr(m, "a\xef\xbf\xbd" "b") != NULL);
	assert_true(strstr(m, "e\xef\xbf\xbd") != NULL);
	assert_null(strstr(m, "\xc0"));
	json_decref(j);
}

static void test_json_cut(void **state)
{
	(void)state;
	/* a message far longer than the line, full of characters that escape to 2 and 6 bytes
	 * and of 3-byte characters: every cut point must still give valid JSON */
	char msg[1000];
	size_t n = 0;
	while (n + 6 < sizeof(msg)) {
		msg[n++] = '"';
		msg[n++] = '\x01';
		memcpy(msg + n, "\xe2\x82\xac", 3);
		n += 3;
	}
	msg[n] = 0;
	for (size_t cap = 140; cap < 400; cap++) {
		json_t *j = json_line(msg, 1, cap);
		const char *m = json_string_value(json_object_get(j, "msg"));
		assert_non_null(m);
		assert_true(strncmp(m, msg, strlen(m)) == 0); /* a prefix of the message */
		assert_non_null(json_object_get(j, "trace_id")); /* the tail always survives */
		json_decref(j);
	}
	/* escape alone, byte by byte */
	char out[8];
	assert_int_equal(log_json_escape(out, sizeof(out), "ab\x01"), 2); /* \u0001 does not fit */
	assert_string_equal(out, "ab");
}

static void test_text(void **state)
{
	(void)state;
	char buf[LOG_LINE_MAX];
	size_t n = log_format_line(buf, sizeof(buf), LOG_FMT_TEXT, &when, "dvv", LOG_INFO,
				   0x1122334455667788ULL, "player joined");
	assert_string_equal(buf,
			    "2026-11-30T00:53:20.123Z dvv info: trace=1122334455667788 player joined\n");
	assert_int_equal(n, strlen(buf));
	n = log_format_line(buf, sizeof(buf), LOG_FMT_TEXT, &when, "dvv", LOG_ERROR, 0, "x");
	assert_string_equal(buf, "2026-11-30T00:53:20.123Z dvv error: x\n");
	/* cut to the buffer, still one line */
	char big[3000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	n = log_format_line(buf, sizeof(buf), LOG_FMT_TEXT, &when, "dvv", LOG_INFO, 0, big);
	assert_int_equal(n, sizeof(buf) - 1);
	assert_int_equal(buf[n - 1], '\n');
}

static void test_parse(void **state)
{
	(void)state;
	assert_int_equal(log_format_parse("json"), LOG_FMT_JSON);
	assert_int_equal(log_format_parse("TEXT"), LOG_FMT_TEXT);
	assert_int_equal(log_format_parse("xml"), -1);
}

static int cmp64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void test_trace_ids(void **state)
{
	(void)state;
	enum { N = 100000 };
	uint64_t *ids = malloc(N * sizeof(*ids));
	assert_non_null(ids);
	int high = 0;
	for (int i = 0; i < N; i++) {
		ids[i] = log_trace_new();
		assert_true(ids[i] != 0);
		high += (int)(ids[i] >> 63);
	}
	qsort(ids, N, sizeof(*ids), cmp64);
	for (int i = 1; i < N; i++)
		assert_true(ids[i] != ids[i - 1]);
	/* well mixed: the top bit is set about half the time (a counter would never set it) */
	assert_true(high > N / 3 && high < 2 * N / 3);
	char hex[LOG_TRACE_HEX];
	log_trace_fmt(0xabcULL, hex);
	assert_string_equal(hex, "0000000000000abc");
	free(ids);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_members), cmocka_unit_test(test_json_escaping),
		cmocka_unit_test(test_json_utf8),    cmocka_unit_test(test_json_cut),
		cmocka_unit_test(test_text),	     cmocka_unit_test(test_parse),
		cmocka_unit_test(test_trace_ids),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
