/* Stripe webhook verification, event parsing and the outbound HTTP client (libcurl): the
 * Stripe-specific bytes, kept apart from the database side (billing.c) so they can be unit
 * tested and fuzzed on their own. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "stripe.h"
#include "net.h" /* hex_encode, hex_decode */

/* Stripe API version the outbound calls pin, so the answers have the shape parsed here. */
#define STRIPE_VERSION "2024-06-20"

static void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- webhook signatures ----------------------------------------------------------------- */

static int hmac_sha256(const char *key, const char *t, size_t tlen, const char *payload,
		       size_t len, unsigned char out[32])
{
	int ret = -ENOMEM;
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	size_t outl = 0;

	if (!ctx)
		goto out;
	ret = -EIO;
	if (!EVP_MAC_init(ctx, (const unsigned char *)key, strlen(key), params) ||
	    !EVP_MAC_update(ctx, (const unsigned char *)t, tlen) ||
	    !EVP_MAC_update(ctx, (const unsigned char *)".", 1) ||
	    (len && !EVP_MAC_update(ctx, (const unsigned char *)payload, len)) ||
	    !EVP_MAC_final(ctx, out, &outl, 32) || outl != 32)
		goto out;
	ret = 0;
out:
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	return ret;
}

int stripe_sign(const char *secret, const char *payload, size_t len, int64_t t, char *out,
		size_t outlen)
{
	char ts[24];
	unsigned char mac[32];
	int n = snprintf(ts, sizeof(ts), "%" PRId64, t);
	int ret = hmac_sha256(secret, ts, (size_t)n, payload, len, mac);
	if (ret)
		return ret;
	char hex[65];
	hex_encode(mac, sizeof(mac), hex);
	if ((size_t)snprintf(out, outlen, "t=%s,v1=%s", ts, hex) >= outlen)
		return -ENOSPC;
	return 0;
}

int stripe_verify_signature(const char *secret, const char *payload, size_t len,
			    const char *header, int64_t now, int tolerance_s, char *err,
			    size_t errlen)
{
	unsigned char sigs[STRIPE_SIG_MAX_V1][32], mac[32];
	int nsig = 0, ret = -EINVAL;
	const char *tstr = NULL;
	size_t tlen = 0;
	int64_t t = 0;

	if (!secret || !*secret) {
		seterr(err, errlen, "no webhook signing secret configured");
		return -EINVAL;
	}
	if (!header || !*header) {
		seterr(err, errlen, "missing Stripe-Signature header");
		return -EINVAL;
	}
	size_t hlen = strnlen(header, STRIPE_SIG_HEADER_MAX + 1);
	if (hlen > STRIPE_SIG_HEADER_MAX) {
		seterr(err, errlen, "Stripe-Signature header longer than %d bytes",
		       STRIPE_SIG_HEADER_MAX);
		return -EINVAL;
	}

	/* items "k=v" separated by commas; unknown keys (v0, future schemes) are skipped */
	for (const char *p = header; p < header + hlen;) {
		const char *end = memchr(p, ',', (size_t)(header + hlen - p));
		if (!end)
			end = header + hlen;
		while (p < end && *p == ' ')
			p++;
		const char *eq = memchr(p, '=', (size_t)(end - p));
		if (!eq || eq == p) {
			seterr(err, errlen, "Stripe-Signature: item without key=value");
			goto out;
		}
		const char *v = eq + 1;
		size_t klen = (size_t)(eq - p), vlen = (size_t)(end - v);
		if (klen == 1 && *p == 't') {
			if (tstr) {
				seterr(err, errlen, "Stripe-Signature: more than one timestamp");
				goto out;
			}
			if (vlen == 0 || vlen > 12) {
				seterr(err, errlen, "Stripe-Signature: bad timestamp");
				goto out;
			}
			for (size_t i = 0; i < vlen; i++) {
				if (v[i] < '0' || v[i] > '9') {
					seterr(err, errlen, "Stripe-Signature: bad timestamp");
					goto out;
				}
				t = t * 10 + (v[i] - '0');
			}
			tstr = v;
			tlen = vlen;
		} else if (klen == 2 && p[0] == 'v' && p[1] == '1') {
			if (nsig == STRIPE_SIG_MAX_V1) {
				seterr(err, errlen, "Stripe-Signature: more than %d v1 signatures",
				       STRIPE_SIG_MAX_V1);
				goto out;
			}
			if (vlen != 64) {
				seterr(err, errlen,
				       "Stripe-Signature: v1 signature is not 64 hex digits");
				goto out;
			}
			if (hex_decode(v, 64, sigs[nsig], sizeof(sigs[nsig])) != 32) {
				seterr(err, errlen,
				       "Stripe-Signature: v1 signature is not 64 hex digits");
				goto out;
			}
			nsig++;
		}
		p = end + 1;
	}
	if (!tstr) {
		seterr(err, errlen, "Stripe-Signature: no timestamp (t=)");
		goto out;
	}
	if (!nsig) {
		seterr(err, errlen, "Stripe-Signature: no v1 signature");
		goto out;
	}

	ret = hmac_sha256(secret, tstr, tlen, payload, len, mac);
	if (ret) {
		seterr(err, errlen, "HMAC computation failed");
		goto out;
	}
	/* every v1 is compared (constant time each), so timing reveals neither which one nor how
	 * much of it matched */
	int match = 0;
	for (int i = 0; i < nsig; i++)
		match |= CRYPTO_memcmp(sigs[i], mac, sizeof(mac)) == 0;
	if (!match) {
		seterr(err, errlen, "no v1 signature matches the payload");
		ret = -EKEYREJECTED;
		goto out;
	}
	int64_t skew = now - t;
	if (skew > tolerance_s || skew < -(int64_t)tolerance_s) {
		seterr(err, errlen, "timestamp %" PRId64 " s %s, tolerance %d s",
		       skew < 0 ? -skew : skew, skew < 0 ? "in the future" : "old", tolerance_s);
		ret = -ETIME;
		goto out;
	}
	ret = 0;
out:
	OPENSSL_cleanse(mac, sizeof(mac));
	return ret;
}

/* ---- event parsing ------------------------------------------------------------------------ */

/* Copies a string field (or the `id` of an expanded object in its place) into buf. Absent or
 * null: "". Anything else, too long or with control characters: -EINVAL. */
static int get_id(json_t *obj, const char *key, char *buf, size_t size, const char *what,
		  char *err, size_t errlen)
{
	buf[0] = '\0';
	json_t *v = obj ? json_object_get(obj, key) : NULL;
	if (json_is_object(v))
		v = json_object_get(v, "id");
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v)) {
		seterr(err, errlen, "%s is not a string", what);
		return -EINVAL;
	}
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (n >= size) {
		seterr(err, errlen, "%s longer than %zu bytes", what, size - 1);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
			seterr(err, errlen, "%s has a control character", what);
			return -EINVAL;
		}
	}
	memcpy(buf, s, n + 1);
	return 0;
}

/* Integer field (unix seconds, counts): absent/null 0; must be 0..2^40. */
static int get_int(json_t *obj, const char *key, int64_t *out, const char *what, char *err,
		   size_t errlen)
{
	*out = 0;
	json_t *v = obj ? json_object_get(obj, key) : NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > (1LL << 40)) {
		seterr(err, errlen, "%s is not a non-negative integer", what);
		return -EINVAL;
	}
	*out = json_integer_value(v);
	return 0;
}

static json_t *first_item(json_t *obj, const char *list)
{
	json_t *l = json_object_get(obj, list);
	json_t *data = json_is_object(l) ? json_object_get(l, "data") : NULL;
	json_t *it = json_is_array(data) ? json_array_get(data, 0) : NULL;
	return json_is_object(it) ? it : NULL;
}

static json_t *path(json_t *o, const char *a, const char *b)
{
	json_t *x = json_is_object(o) ? json_object_get(o, a) : NULL;
	if (b)
		x = json_is_object(x) ? json_object_get(x, b) : NULL;
	return json_is_object(x) ? x : NULL;
}

int stripe_event_parse(const char *json, size_t len, struct stripe_event *out, char *err,
		       size_t errlen)
{
	json_error_t jerr;
	json_t *root = NULL;
	int ret = -EINVAL;
	int64_t v;

	memset(out, 0, sizeof(*out));
	if (len > STRIPE_EVENT_MAX) {
		seterr(err, errlen, "event larger than %d bytes", STRIPE_EVENT_MAX);
		return -E2BIG;
	}
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		seterr(err, errlen, "not JSON: %.80s (line %d)", jerr.text, jerr.line);
		goto out;
	}
	if (!json_is_object(root)) {
		seterr(err, errlen, "event is not a JSON object");
		goto out;
	}
	json_t *o = json_object_get(root, "object");
	if (!json_is_string(o) || strcmp(json_string_value(o), "event")) {
		seterr(err, errlen, "object is not \"event\"");
		goto out;
	}
	if (get_id(root, "id", out->id, sizeof(out->id), "id", err, errlen) ||
	    get_id(root, "type", out->type, sizeof(out->type), "type", err, errlen) ||
	    get_int(root, "created", &out->created, "created", err, errlen))
		goto out;
	if (!out->id[0] || !out->type[0] || !out->created) {
		seterr(err, errlen, "event lacks id, type or created");
		goto out;
	}
	json_t *obj = path(root, "data", "object");
	if (!obj) {
		seterr(err, errlen, "event lacks data.object");
		goto out;
	}
	char kind[64];
	if (get_id(obj, "object", kind, sizeof(kind), "data.object.object", err, errlen) ||
	    get_id(obj, "id", out->object_id, sizeof(out->object_id), "data.object.id", err,
		   errlen) ||
	    get_id(obj, "customer", out->customer, sizeof(out->customer), "customer", err, errlen))
		goto out;

	json_t *meta = path(obj, "metadata", NULL);
	if (!strcmp(kind, "checkout.session")) {
		out->kind = STRIPE_OBJ_CHECKOUT_SESSION;
		if (get_id(obj, "subscription", out->subscription, sizeof(out->subscription),
			   "subscription", err, errlen) ||
		    get_id(obj, "client_reference_id", out->client_reference_id,
			   sizeof(out->client_reference_id), "client_reference_id", err, errlen) ||
		    get_id(meta, "user_id", out->user_id, sizeof(out->user_id),
			   "metadata.user_id", err, errlen) ||
		    get_id(meta, "plan", out->plan, sizeof(out->plan), "metadata.plan", err,
			   errlen) ||
		    get_id(obj, "mode", out->mode, sizeof(out->mode), "mode", err, errlen) ||
		    get_id(obj, "payment_status", out->payment_status,
			   sizeof(out->payment_status), "payment_status", err, errlen) ||
		    get_id(obj, "status", out->status, sizeof(out->status), "status", err, errlen))
			goto out;
	} else if (!strcmp(kind, "subscription")) {
		out->kind = STRIPE_OBJ_SUBSCRIPTION;
		json_t *item = first_item(obj, "items");
		if (get_id(obj, "status", out->status, sizeof(out->status), "status", err,
			   errlen) ||
		    get_id(meta, "user_id", out->user_id, sizeof(out->user_id),
			   "metadata.user_id", err, errlen) ||
		    get_id(path(item, "price", NULL), "id", out->price, sizeof(out->price),
			   "items.data[0].price.id", err, errlen) ||
		    get_int(obj, "current_period_start", &out->period_start,
			    "current_period_start", err, errlen) ||
		    get_int(obj, "current_period_end", &out->period_end, "current_period_end",
			    err, errlen))
			goto out;
		/* API versions from 2025-03-31 carry the period on the item, not the top level */
		if (!out->period_start && !out->period_end && item &&
		    (get_int(item, "current_period_start", &out->period_start,
			     "items.data[0].current_period_start", err, errlen) ||
		     get_int(item, "current_period_end", &out->period_end,
			     "items.data[0].current_period_end", err, errlen)))
			goto out;
		json_t *c = json_object_get(obj, "cancel_at_period_end");
		if (c && !json_is_boolean(c) && !json_is_null(c)) {
			seterr(err, errlen, "cancel_at_period_end is not a boolean");
			goto out;
		}
		out->cancel_at_period_end = json_is_true(c);
	} else if (!strcmp(kind, "invoice")) {
		out->kind = STRIPE_OBJ_INVOICE;
		/* older API versions: invoice.subscription; newer: parent.subscription_details */
		json_t *sd = path(obj, "parent", "subscription_details");
		if (get_id(obj, "subscription", out->subscription, sizeof(out->subscription),
			   "subscription", err, errlen) ||
		    (!out->subscription[0] &&
		     get_id(sd, "subscription", out->subscription, sizeof(out->subscription),
			    "parent.subscription_details.subscription", err, errlen)) ||
		    get_id(path(sd ? sd : path(obj, "subscription_details", NULL), "metadata",
				NULL),
			   "user_id", out->user_id, sizeof(out->user_id),
			   "subscription_details.metadata.user_id", err, errlen) ||
		    get_int(obj, "attempt_count", &v, "attempt_count", err, errlen))
			goto out;
		out->attempt_count = (int)(v > 1000000 ? 1000000 : v);
	} else {
		out->kind = STRIPE_OBJ_OTHER;
	}
	ret = 0;
out:
	json_decref(root);
	return ret;
}

/* ---- outbound client ---------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int stripe_global_init(void)
{
	pthread_once(&curl_once, curl_init_once);
	return curl_init_rc == CURLE_OK ? 0 : -EIO;
}

int stripe_form_add(char **form, const char *key, const char *value)
{
	char *k = curl_easy_escape(NULL, key, 0);
	char *v = curl_easy_escape(NULL, value ? value : "", 0);
	char *n = NULL;
	int ret = -ENOMEM;

	if (!k || !v)
		goto out;
	if (asprintf(&n, "%s%s%s=%s", *form ? *form : "", *form && **form ? "&" : "", k, v) < 0) {
		n = NULL;
		goto out;
	}
	free(*form);
	*form = n;
	ret = 0;
out:
	curl_free(k);
	curl_free(v);
	return ret;
}

struct buf {
	char *p;
	size_t len;
	bool too_big;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	struct buf *b = ud;
	size_t n = size * nmemb;
	if (b->len + n > STRIPE_RESP_MAX) {
		b->too_big = true;
		return 0; /* aborts the transfer */
	}
	char *np = realloc(b->p, b->len + n + 1);
	if (!np)
		return 0;
	memcpy(np + b->len, data, n);
	b->len += n;
	np[b->len] = '\0';
	b->p = np;
	return n;
}

/* Stripe's error messages may quote the request; anything that looks like a key is cut. */
static void redact(char *s)
{
	static const char *const pfx[] = {"sk_", "rk_", "pk_", "whsec_", "Bearer "};
	for (char *p = s; *p; p++) {
		for (size_t i = 0; i < sizeof(pfx) / sizeof(pfx[0]); i++) {
			size_t n = strlen(pfx[i]);
			if (strncmp(p, pfx[i], n))
				continue;
			char *e = p + n;
			while (*e && !isspace((unsigned char)*e) && *e != '\'' && *e != '"' &&
			       *e != ',')
				e++;
			static const char r[] = "[redacted]";
			memmove(p + sizeof(r) - 1, e, strlen(e) + 1);
			memcpy(p, r, sizeof(r) - 1);
			p += sizeof(r) - 2;
			break;
		}
	}
}

/* One POST of a form to <api_base><path>; *out is the parsed JSON of a 2xx answer. Retried once
 * on a network error, 429 or 5xx, with the same Idempotency-Key so Stripe does the work once. */
static int stripe_post(const struct stripe_client *c, const char *pathname, const char *form,
		       const char *idem_key, json_t **out, char *err, size_t errlen)
{
	CURL *h = NULL;
	struct curl_slist *hdr = NULL;
	struct buf b = {0};
	char *url = NULL, *auth = NULL, *idem = NULL;
	int ret = -EINVAL;
	long status = 0;

	*out = NULL;
	if (!c->api_base || !*c->api_base || !c->secret_key || !*c->secret_key) {
		seterr(err, errlen, "Stripe is not configured (--stripe-api, secret key)");
		return -ENOTCONN;
	}
	if ((ret = stripe_global_init())) {
		seterr(err, errlen, "libcurl initialisation failed");
		return ret;
	}
	size_t bl = strlen(c->api_base);
	while (bl && c->api_base[bl - 1] == '/')
		bl--;
	ret = -ENOMEM;
	/* asprintf leaves the pointer undefined on failure: reset it so `out` frees only ours */
	if (asprintf(&url, "%.*s%s", (int)bl, c->api_base, pathname) < 0) {
		url = NULL;
		goto out;
	}
	if (asprintf(&auth, "Authorization: Bearer %s", c->secret_key) < 0) {
		auth = NULL;
		goto out;
	}
	if (asprintf(&idem, "Idempotency-Key: %s", idem_key ? idem_key : "") < 0) {
		idem = NULL;
		goto out;
	}
	h = curl_easy_init();
	if (!h)
		goto out;
	struct curl_slist *l;
	if (!(l = curl_slist_append(hdr, auth)) || !(hdr = l) ||
	    !(l = curl_slist_append(hdr, "Stripe-Version: " STRIPE_VERSION)) || !(hdr = l) ||
	    !(l = curl_slist_append(hdr, "Content-Type: application/x-www-form-urlencoded")) ||
	    !(hdr = l) || (idem_key && (!(l = curl_slist_append(hdr, idem)) || !(hdr = l))))
		goto out;
	long to = c->timeout_s > 0 ? c->timeout_s : STRIPE_TIMEOUT_S;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, to);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, to);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, form ? form : "");
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "dvv-api");

	for (int attempt = 0; attempt < 2; attempt++) {
		free(b.p);
		b = (struct buf){0};
		CURLcode rc = curl_easy_perform(h);
		status = 0;
		if (rc == CURLE_OK)
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		if (b.too_big) {
			seterr(err, errlen, "Stripe answer larger than %d bytes", STRIPE_RESP_MAX);
			ret = -E2BIG;
			goto out;
		}
		if (rc != CURLE_OK) {
			seterr(err, errlen, "Stripe unreachable: %s", curl_easy_strerror(rc));
			ret = rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EHOSTUNREACH;
			continue;
		}
		if (status == 429 || status >= 500) {
			seterr(err, errlen, "Stripe answered HTTP %ld", status);
			ret = -EAGAIN;
			continue;
		}
		break;
	}
	if (status == 0 || status == 429 || status >= 500)
		goto out;

	json_error_t jerr;
	json_t *j = b.p ? json_loadb(b.p, b.len, 0, &jerr) : NULL;
	if (status < 200 || status > 299) {
		json_t *e = json_object_get(j, "error");
		char msg[200] = "";
		snprintf(msg, sizeof(msg), "%s", json_string_value(json_object_get(e, "message")) ?: "");
		redact(msg);
		seterr(err, errlen, "Stripe answered HTTP %ld %s: %s", status,
		       json_string_value(json_object_get(e, "type")) ?: "", msg);
		json_decref(j);
		ret = status == 401 || status == 403 ? -EACCES : -EPROTO;
		goto out;
	}
	if (!json_is_object(j)) {
		seterr(err, errlen, "Stripe answer is not a JSON object");
		json_decref(j);
		ret = -EPROTO;
		goto out;
	}
	*out = j;
	ret = 0;
out:
	curl_slist_free_all(hdr);
	curl_easy_cleanup(h);
	free(b.p);
	free(url);
	if (auth)
		OPENSSL_cleanse(auth, strlen(auth));
	free(auth);
	free(idem);
	return ret;
}

static int copy_field(json_t *j, const char *key, char *buf, size_t len, char *err,
		      size_t errlen)
{
	const char *s = json_string_value(json_object_get(j, key));
	if (!s || !*s || strlen(s) >= len) {
		seterr(err, errlen, "Stripe answer lacks a usable \"%s\"", key);
		return -EPROTO;
	}
	snprintf(buf, len, "%s", s);
	return 0;
}

int stripe_create_customer(const struct stripe_client *c, const char *email,
			   const char *user_id, const char *idem_key, char *id_out,
			   size_t idlen, char *err, size_t errlen)
{
	char *form = NULL;
	json_t *j = NULL;
	int ret = -ENOMEM;

	if (stripe_form_add(&form, "email", email) ||
	    stripe_form_add(&form, "metadata[user_id]", user_id))
		goto out;
	ret = stripe_post(c, "/v1/customers", form, idem_key, &j, err, errlen);
	if (ret)
		goto out;
	ret = copy_field(j, "id", id_out, idlen, err, errlen);
out:
	json_decref(j);
	free(form);
	return ret;
}

int stripe_create_checkout(const struct stripe_client *c, const struct stripe_checkout_req *r,
			   char *id_out, size_t idlen, char *url_out, size_t urllen, char *err,
			   size_t errlen)
{
	char *form = NULL;
	json_t *j = NULL;
	int ret = -ENOMEM;

	if (stripe_form_add(&form, "mode", "subscription") ||
	    stripe_form_add(&form, "customer", r->customer) ||
	    stripe_form_add(&form, "line_items[0][price]", r->price) ||
	    stripe_form_add(&form, "line_items[0][quantity]", "1") ||
	    stripe_form_add(&form, "client_reference_id", r->user_id) ||
	    stripe_form_add(&form, "metadata[user_id]", r->user_id) ||
	    stripe_form_add(&form, "metadata[plan]", r->plan) ||
	    stripe_form_add(&form, "subscription_data[metadata][user_id]", r->user_id) ||
	    stripe_form_add(&form, "subscription_data[metadata][plan]", r->plan) ||
	    stripe_form_add(&form, "success_url", r->success_url) ||
	    stripe_form_add(&form, "cancel_url", r->cancel_url))
		goto out;
	ret = stripe_post(c, "/v1/checkout/sessions", form, r->idem_key, &j, err, errlen);
	if (ret)
		goto out;
	ret = copy_field(j, "id", id_out, idlen, err, errlen);
	if (!ret)
		ret = copy_field(j, "url", url_out, urllen, err, errlen);
out:
	json_decref(j);
	free(form);
	return ret;
}

int stripe_create_portal(const struct stripe_client *c, const char *customer,
			 const char *return_url, char *url_out, size_t urllen, char *err,
			 size_t errlen)
{
	char *form = NULL;
	json_t *j = NULL;
	int ret = -ENOMEM;

	if (stripe_form_add(&form, "customer", customer) ||
	    stripe_form_add(&form, "return_url", return_url))
		goto out;
	ret = stripe_post(c, "/v1/billing_portal/sessions", form, NULL, &j, err, errlen);
	if (ret)
		goto out;
	ret = copy_field(j, "url", url_out, urllen, err, errlen);
out:
	json_decref(j);
	free(form);
	return ret;
}
