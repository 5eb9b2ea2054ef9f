/* The edge-cached status: status_sanitize() keeps only bounded, well-typed fields of an agent's
 * (untrusted) status JSON; the offline renderers mark the stored copy "offline - back soon" for
 * the status ping and the legacy ping. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "mc.h"
#include "status.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *sanitized(const char *in)
{
	char *out = NULL, err[160] = "";
	size_t len;
	int rc = status_sanitize(in, strlen(in), &out, &len, err, sizeof(err));
	if (rc)
		fail_msg("sanitize failed (%d): %s", rc, err);
	assert_int_equal(strlen(out), len);
	assert_true(len <= STATUS_STORED_MAX);
	json_t *j = json_loads(out, 0, NULL);
	assert_non_null(j);
	free(out);
	return j;
}

static void a_vanilla_status_keeps_what_the_relay_shows(void **state)
{
	json_t *j = sanitized(
		"{\"version\":{\"name\":\"1.20.4\",\"protocol\":765},"
		"\"players\":{\"max\":20,\"online\":3,\"sample\":[{\"name\":\"alice\",\"id\":\"x\"}]},"
		"\"description\":{\"text\":\"My world\",\"color\":\"gold\"},"
		"\"favicon\":\"data:image/png;base64,iVBORw0KGgo=\","
		"\"enforcesSecureChat\":true,\"modinfo\":{\"type\":\"FML\"}}");
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "version"), "name")),
			    "1.20.4");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "version"), "protocol")),
			 765);
	json_t *pl = json_object_get(j, "players");
	assert_int_equal(json_integer_value(json_object_get(pl, "max")), 20);
	assert_int_equal(json_integer_value(json_object_get(pl, "online")), 3);
	assert_null(json_object_get(pl, "sample")); /* player names are not cached */
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "description"), "text")),
			    "My world");
	assert_string_equal(json_string_value(json_object_get(j, "favicon")),
			    "data:image/png;base64,iVBORw0KGgo=");
	assert_null(json_object_get(j, "enforcesSecureChat"));
	assert_null(json_object_get(j, "modinfo"));
	assert_int_equal(json_object_size(j), 4);
	json_decref(j);
}

static void junk_and_non_objects_are_refused(void **state)
{
	static const char *bad[] = {"", "not json", "[1,2,3]", "\"a string\"", "42", "null",
				    "{\"a\":1", "{\"a\":1}{", "{\"a\":1,\"a\":2}"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *out = (char *)1, err[160] = "";
		size_t len = 1;
		assert_int_equal(status_sanitize(bad[i], strlen(bad[i]), &out, &len, err, sizeof(err)),
				 -EINVAL);
		assert_null(out);
		assert_int_equal(len, 0);
		assert_true(err[0] != 0);
	}
	/* bytes after a NUL are not ignored: the length is what counts */
	char *out = NULL, err[160];
	size_t len;
	assert_int_equal(status_sanitize("{}\0junk", 7, &out, &len, err, sizeof(err)), -EINVAL);
}

static void wrong_types_and_out_of_range_values_are_dropped(void **state)
{
	json_t *j = sanitized("{\"version\":{\"name\":7,\"protocol\":\"765\"},"
			      "\"players\":{\"max\":1e3,\"online\":99999999999},"
			      "\"description\":42,\"favicon\":[\"data:image/png;base64,\"]}");
	assert_int_equal(json_object_size(json_object_get(j, "version")), 0);
	assert_int_equal(json_object_size(json_object_get(j, "players")), 0);
	assert_null(json_object_get(j, "description"));
	assert_null(json_object_get(j, "favicon"));
	json_decref(j);
	j = sanitized("{\"version\":\"1.20\",\"players\":[1,2]}");
	assert_int_equal(json_object_size(j), 0);
	json_decref(j);
	/* a version name over its bound is dropped, not kept half */
	char in[256];
	snprintf(in, sizeof(in), "{\"version\":{\"name\":\"%065d\",\"protocol\":5}}", 0);
	j = sanitized(in);
	assert_null(json_object_get(json_object_get(j, "version"), "name"));
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "version"), "protocol")), 5);
	json_decref(j);
}

static void a_huge_or_foreign_favicon_is_dropped(void **state)
{
	size_t n = STATUS_FAVICON_MAX + 100;
	char *in = malloc(n + 64);
	assert_non_null(in);
	int k = snprintf(in, n + 64, "{\"favicon\":\"" STATUS_FAVICON_PREFIX);
	memset(in + k, 'A', n - (size_t)k);
	strcpy(in + n, "\"}");
	json_t *j = sanitized(in);
	assert_null(json_object_get(j, "favicon"));
	json_decref(j);
	free(in);
	j = sanitized("{\"favicon\":\"https://evil.example/x.png\"}");
	assert_null(json_object_get(j, "favicon"));
	json_decref(j);
	j = sanitized("{\"favicon\":\"data:text/html;base64,PHNjcmlwdD4=\"}");
	assert_null(json_object_get(j, "favicon"));
	json_decref(j);
}

static void a_huge_or_deep_description_becomes_bounded_text(void **state)
{
	/* 500 nested components, each adding text: over the description bound */
	size_t cap = 200000;
	char *in = malloc(cap);
	assert_non_null(in);
	size_t k = (size_t)snprintf(in, cap, "{\"description\":");
	for (int i = 0; i < 500; i++)
		k += (size_t)snprintf(in + k, cap - k, "{\"text\":\"level%d \",\"extra\":[", i);
	k += (size_t)snprintf(in + k, cap - k, "\"end\"");
	for (int i = 0; i < 500; i++)
		k += (size_t)snprintf(in + k, cap - k, "]}");
	snprintf(in + k, cap - k, "}");
	json_t *j = sanitized(in);
	json_t *d = json_object_get(j, "description");
	assert_true(json_is_string(d));
	assert_true(json_string_length(d) < STATUS_MOTD_TEXT_MAX);
	assert_memory_equal(json_string_value(d), "level0 level1 ", 14);
	json_decref(j);
	free(in);
	/* a small component with extra parts is kept as it is */
	j = sanitized("{\"description\":{\"text\":\"A\",\"extra\":[{\"text\":\"B\",\"bold\":true},\"C\"]}}");
	char *s = json_dumps(json_object_get(j, "description"), JSON_COMPACT);
	assert_string_equal(s, "{\"text\":\"A\",\"extra\":[{\"text\":\"B\",\"bold\":true},\"C\"]}");
	free(s);
	json_decref(j);
}

static void component_text_is_bounded_on_a_utf8_boundary(void **state)
{
	char out[8];
	/* "ab" then four 2-byte characters: 7 bytes fit, the 4th character would be split */
	const char *c = "{\"text\":\"ab\",\"extra\":[\"\xc3\xa9\xc3\xa9\",\"\xc3\xa9\xc3\xa9\"]}";
	size_t n = status_component_text(c, strlen(c), out, sizeof(out));
	assert_int_equal(n, 6);
	assert_string_equal(out, "ab\xc3\xa9\xc3\xa9");
	assert_int_equal(status_component_text("[\"x\",{\"text\":\"y\"},3]", 20, out, sizeof(out)), 2);
	assert_string_equal(out, "xy");
	assert_int_equal(status_component_text("junk", 4, out, sizeof(out)), 0);
	assert_string_equal(out, "");
}

static char *stored(const char *in, size_t *len)
{
	char *out = NULL, err[160];
	assert_int_equal(status_sanitize(in, strlen(in), &out, len, err, sizeof(err)), 0);
	return out;
}

static void the_offline_answer_marks_the_cached_status(void **state)
{
	size_t len, olen;
	char *s = stored("{\"version\":{\"name\":\"1.20.4\",\"protocol\":765},"
			 "\"players\":{\"max\":20,\"online\":3},"
			 "\"description\":{\"text\":\"My \",\"extra\":[\"world\"]},"
			 "\"favicon\":\"data:image/png;base64,iVBORw0KGgo=\"}",
			 &len);
	char *off = NULL;
	assert_int_equal(status_render_offline(s, len, &off, &olen), 0);
	json_t *j = json_loads(off, 0, NULL);
	assert_non_null(j);
	json_t *v = json_object_get(j, "version");
	assert_string_equal(json_string_value(json_object_get(v, "name")), "Offline");
	assert_int_equal(json_integer_value(json_object_get(v, "protocol")), -1);
	json_t *pl = json_object_get(j, "players");
	assert_int_equal(json_integer_value(json_object_get(pl, "online")), 0);
	assert_int_equal(json_integer_value(json_object_get(pl, "max")), 20);
	assert_string_equal(json_string_value(json_object_get(j, "favicon")),
			    "data:image/png;base64,iVBORw0KGgo=");
	char *d = json_dumps(json_object_get(j, "description"), JSON_COMPACT);
	char text[512];
	status_component_text(d, strlen(d), text, sizeof(text));
	assert_string_equal(text, "offline - back soon\nMy world");
	free(d);
	json_decref(j);
	/* the packet around it: VarInt length, id 0, VarInt string length, the JSON */
	uint8_t pkt[STATUS_STORED_MAX + 64];
	size_t n = status_packet(off, olen, pkt, sizeof(pkt));
	assert_true(n > olen);
	int32_t id;
	const uint8_t *pl8;
	size_t plen, used;
	assert_int_equal(mc_parse_packet(pkt, n, sizeof(pkt), &id, &pl8, &plen, &used), 0);
	assert_int_equal(id, 0);
	assert_int_equal(used, n);
	assert_memory_equal(pkt + n - olen, off, olen);
	assert_int_equal(status_packet(off, olen, pkt, olen), 0); /* too small: nothing */
	free(off);
	free(s);
	/* a status without description or favicon still renders */
	s = stored("{}", &len);
	assert_int_equal(status_render_offline(s, len, &off, &olen), 0);
	assert_non_null(strstr(off, "offline - back soon"));
	assert_null(strstr(off, "favicon"));
	free(off);
	free(s);
	assert_int_equal(status_render_offline("nope", 4, &off, &olen), -EINVAL);
}

/* UTF-16BE units of a legacy kick back to ASCII (what the tests write is ASCII) */
static void legacy_ascii(const uint8_t *p, size_t n, char *out)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		*out++ = p[i + 1] ? (char)p[i + 1] : '|';
	*out = 0;
}

static void the_legacy_answer_is_the_same_in_one_line(void **state)
{
	size_t len;
	char *s = stored("{\"description\":\"line one\\nline two\"}", &len);
	uint8_t out[2048];
	size_t n = status_render_legacy(s, len, -1, out, sizeof(out));
	assert_true(n > 3);
	assert_int_equal(out[0], 0xFF);
	assert_int_equal((size_t)((out[1] << 8) | out[2]) * 2, n - 3);
	char text[1024];
	legacy_ascii(out + 3, n - 3, text);
	/* "\xa71" NUL proto NUL version NUL motd NUL online NUL max */
	assert_non_null(strstr(text, "|-1|Offline|offline - back soon: line one line two|0|0"));
	free(s);
	assert_int_equal(status_render_legacy("[]", 2, -1, out, sizeof(out)), 0);
	assert_int_equal(status_render_legacy(s = stored("{}", &len), len, -1, out, 4), 0);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_vanilla_status_keeps_what_the_relay_shows),
		cmocka_unit_test(junk_and_non_objects_are_refused),
		cmocka_unit_test(wrong_types_and_out_of_range_values_are_dropped),
		cmocka_unit_test(a_huge_or_foreign_favicon_is_dropped),
		cmocka_unit_test(a_huge_or_deep_description_becomes_bounded_text),
		cmocka_unit_test(component_text_is_bounded_on_a_utf8_boundary),
		cmocka_unit_test(the_offline_answer_marks_the_cached_status),
		cmocka_unit_test(the_legacy_answer_is_the_same_in_one_line),
	};
	return cmocka_run_group_tests_name("status", tests, NULL, NULL);
}
