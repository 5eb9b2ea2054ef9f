/* The agent's credentials file (agent.json): where it lives, loading it only when no one else
 * could have read it, validating every field, and replacing it atomically with safe modes. */
#include "creds.h"
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool charset_ok(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

bool creds_session_ok(const char *s) { return charset_ok(s, CREDS_SESSION_MAX); }
bool creds_id_ok(const char *s) { return charset_ok(s, CREDS_ID_MAX); }

int creds_path(char *path, size_t cap, char *dir, size_t dircap, char *err, size_t errlen)
{
	const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	char d[4096];
	/* the XDG spec: a relative XDG_CONFIG_HOME is invalid and must be ignored */
	if (x && x[0] == '/')
		snprintf(d, sizeof(d), "%s/dvv", x);
	else if (home && home[0])
		snprintf(d, sizeof(d), "%s/.config/dvv", home);
	else {
		snprintf(err, errlen, "neither XDG_CONFIG_HOME nor HOME is set: no place for the "
				      "credentials file");
		return -ENOENT;
	}
	if ((size_t)snprintf(path, cap, "%s/agent.json", d) >= cap ||
	    (dir && (size_t)snprintf(dir, dircap, "%s", d) >= dircap)) {
		snprintf(err, errlen, "the credentials path is too long");
		return -ENAMETOOLONG;
	}
	return 0;
}

int creds_check(const struct agent_creds *c, char *err, size_t errlen)
{
	struct http_url u;
	char e2[300];
	if (http_url_parse(c->api, &u, e2, sizeof(e2))) {
		snprintf(err, errlen, "api: %s", e2);
		return -EINVAL;
	}
	size_t tl = strlen(c->token);
	for (size_t i = 0; i < tl; i++)
		if (c->token[i] < 0x21 || c->token[i] > 0x7e) {
			snprintf(err, errlen, "token: not a printable single word");
			return -EINVAL;
		}
	if (c->session[0] && !creds_session_ok(c->session)) {
		snprintf(err, errlen, "session: not a base64url string of at most %d characters",
			 CREDS_SESSION_MAX);
		return -EINVAL;
	}
	if (c->tunnel[0] && !creds_id_ok(c->tunnel)) {
		snprintf(err, errlen, "tunnel: not an id ([A-Za-z0-9_-]{1,64})");
		return -EINVAL;
	}
	if (c->nrelays > AGENT_MAX_REGIONS) {
		snprintf(err, errlen, "relays: more than %d", AGENT_MAX_REGIONS);
		return -EINVAL;
	}
	if (c->nrelays) {
		/* one spec string through the same parser as --regions */
		char spec[AGENT_MAX_REGIONS * 300] = "";
		size_t off = 0;
		for (unsigned i = 0; i < c->nrelays; i++)
			off += (size_t)snprintf(spec + off, sizeof(spec) - off, "%s%s=%s",
						i ? "," : "", c->relays[i].name,
						c->relays[i].endpoint);
		struct agent_region tmp[AGENT_MAX_REGIONS];
		unsigned n;
		if (agent_regions_parse(spec, tmp, &n, e2, sizeof(e2))) {
			snprintf(err, errlen, "relays: %s", e2);
			return -EINVAL;
		}
	}
	if (c->ca_pem && (strlen(c->ca_pem) > CREDS_CA_MAX ||
			  !strstr(c->ca_pem, "-----BEGIN CERTIFICATE-----"))) {
		snprintf(err, errlen, "ca_pem: not a PEM certificate of at most %d bytes",
			 CREDS_CA_MAX);
		return -EINVAL;
	}
	return 0;
}

void creds_clear(struct agent_creds *c)
{
	free(c->ca_pem);
	explicit_bzero(c, sizeof(*c));
}

/* A string or null member into dst. 0, or -EINVAL naming the field. */
static int get_str(json_t *o, const char *key, char *dst, size_t cap, bool required, char *err,
		   size_t errlen)
{
	json_t *v = json_object_get(o, key);
	dst[0] = 0;
	if (!v || json_is_null(v)) {
		if (!required)
			return 0;
		snprintf(err, errlen, "%s is missing", key);
		return -EINVAL;
	}
	if (!json_is_string(v) || json_string_length(v) >= cap ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		snprintf(err, errlen, "%s is not a string of at most %zu bytes", key, cap - 1);
		return -EINVAL;
	}
	memcpy(dst, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

int creds_load(const char *path, struct agent_creds *c, char *err, size_t errlen)
{
	int rc = 0, fd = -1;
	char *buf = NULL, e2[300];
	size_t len = 0;
	json_t *root = NULL;
	memset(c, 0, sizeof(*c));

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		rc = -errno;
		if (rc == -ENOENT)
			snprintf(err, errlen, "not logged in (no %s): run 'dvv login'", path);
		else
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		snprintf(err, errlen, "%s is not a regular file", path);
		goto out;
	}
	if (st.st_uid != geteuid()) {
		rc = -EPERM;
		snprintf(err, errlen,
			 "%s belongs to another user (uid %u): refusing to use credentials someone "
			 "else controls; remove it and run 'dvv login' again",
			 path, (unsigned)st.st_uid);
		goto out;
	}
	if (st.st_mode & 077) {
		rc = -EPERM;
		snprintf(err, errlen,
			 "%s can be read or changed by other users (mode %03o): its token may have "
			 "leaked. Run 'chmod 600 %s', and get a new token if others could read it",
			 path, (unsigned)(st.st_mode & 0777), path);
		goto out;
	}
	if (st.st_size > CREDS_FILE_MAX) {
		rc = -EFBIG;
		snprintf(err, errlen, "%s is larger than %d bytes", path, CREDS_FILE_MAX);
		goto out;
	}
	buf = malloc(CREDS_FILE_MAX + 1);
	if (!buf) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, buf + len, CREDS_FILE_MAX + 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > CREDS_FILE_MAX) {
			rc = -EFBIG;
			snprintf(err, errlen, "%s is larger than %d bytes", path, CREDS_FILE_MAX);
			goto out;
		}
	}
	json_error_t je;
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!root || !json_is_object(root)) {
		rc = -EINVAL;
		snprintf(err, errlen, "%s is not a JSON object%s%s: run 'dvv login' again", path,
			 root ? "" : ": ", root ? "" : je.text);
		goto out;
	}
	if ((rc = get_str(root, "api", c->api, sizeof(c->api), true, e2, sizeof(e2))) ||
	    (rc = get_str(root, "token", c->token, sizeof(c->token), false, e2, sizeof(e2))) ||
	    (rc = get_str(root, "session", c->session, sizeof(c->session), false, e2,
			  sizeof(e2))) ||
	    (rc = get_str(root, "tunnel", c->tunnel, sizeof(c->tunnel), false, e2, sizeof(e2))))
		goto bad;
	json_t *ca = json_object_get(root, "ca_pem");
	if (ca && !json_is_null(ca)) {
		if (!json_is_string(ca) || json_string_length(ca) > CREDS_CA_MAX) {
			snprintf(e2, sizeof(e2), "ca_pem is not a string of at most %d bytes",
				 CREDS_CA_MAX);
			rc = -EINVAL;
			goto bad;
		}
		c->ca_pem = strdup(json_string_value(ca));
		if (!c->ca_pem) {
			rc = -ENOMEM;
			snprintf(err, errlen, "out of memory");
			goto out;
		}
	}
	json_t *relays = json_object_get(root, "relays");
	if (relays && !json_is_null(relays)) {
		const char *k;
		json_t *v;
		if (!json_is_object(relays)) {
			snprintf(e2, sizeof(e2), "relays is not an object");
			rc = -EINVAL;
			goto bad;
		}
		json_object_foreach(relays, k, v)
		{
			if (c->nrelays >= AGENT_MAX_REGIONS) {
				snprintf(e2, sizeof(e2), "relays: more than %d", AGENT_MAX_REGIONS);
				rc = -EINVAL;
				goto bad;
			}
			struct agent_region *r = &c->relays[c->nrelays];
			if (strlen(k) >= sizeof(r->name) || !json_is_string(v) ||
			    json_string_length(v) >= sizeof(r->endpoint)) {
				snprintf(e2, sizeof(e2), "relays: bad entry");
				rc = -EINVAL;
				goto bad;
			}
			snprintf(r->name, sizeof(r->name), "%s", k);
			snprintf(r->endpoint, sizeof(r->endpoint), "%s", json_string_value(v));
			c->nrelays++;
		}
	}
	if ((rc = creds_check(c, e2, sizeof(e2))))
		goto bad;
	goto out;
bad:
	snprintf(err, errlen, "%s: %s; run 'dvv login' again", path, e2);
out:
	if (buf) {
		explicit_bzero(buf, CREDS_FILE_MAX + 1);
		free(buf);
	}
	json_decref(root); /* jansson does not wipe: the token copy in it is freed as is */
	if (fd >= 0)
		close(fd);
	if (rc)
		creds_clear(c);
	return rc;
}

static json_t *str_or_null(const char *s) { return s && s[0] ? json_string(s) : json_null(); }

/* mkdir -p for the parents of dir (0700 when we create them: ~/.config often does not exist
 * yet), then dir itself 0700, tightening it if it exists looser. */
static int make_dir(const char *dir, char *err, size_t errlen)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s", dir);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0700) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
			return -errno;
		}
		*p = '/';
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
		return -errno;
	}
	struct stat st;
	if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s is not a directory", dir);
		return -ENOTDIR;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, errlen, "%s belongs to another user: refusing to keep credentials there",
			 dir);
		return -EPERM;
	}
	if ((st.st_mode & 077) && chmod(dir, 0700) < 0) {
		snprintf(err, errlen, "chmod 700 %s: %s", dir, strerror(errno));
		return -errno;
	}
	return 0;
}

int creds_save(const char *dir, const char *path, const struct agent_creds *c, char *err,
	       size_t errlen)
{
	int rc, fd = -1, dfd = -1;
	char *text = NULL, tmp[4200] = "", e2[300];
	json_t *root = NULL, *relays = NULL;

	if ((rc = creds_check(c, e2, sizeof(e2)))) {
		snprintf(err, errlen, "not saving invalid credentials: %s", e2);
		goto out;
	}
	if ((rc = make_dir(dir, err, errlen)))
		goto out;
	relays = json_object();
	for (unsigned i = 0; relays && i < c->nrelays; i++)
		json_object_set_new(relays, c->relays[i].name, json_string(c->relays[i].endpoint));
	root = json_pack("{s:s, s:o, s:o, s:o, s:o, s:o}", "api", c->api, "token",
			 str_or_null(c->token), "session", str_or_null(c->session), "relays",
			 relays ? relays : json_object(), "ca_pem", str_or_null(c->ca_pem), "tunnel",
			 str_or_null(c->tunnel));
	relays = NULL; /* root owns it now (or it was freed) */
	text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	if (!text) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmpXXXXXX", path);
	fd = mkostemp(tmp, O_CLOEXEC); /* created 0600 */
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot create a file in %s: %s", dir, strerror(errno));
		tmp[0] = 0;
		goto out;
	}
	size_t len = strlen(text), off = 0;
	if (fchmod(fd, 0600) < 0)
		goto io;
	while (off < len) {
		ssize_t w = write(fd, text + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			goto io;
		off += (size_t)w;
	}
	if (write(fd, "\n", 1) != 1 || fsync(fd) < 0)
		goto io;
	rc = close(fd);
	fd = -1;
	if (rc < 0)
		goto io;
	if (rename(tmp, path) < 0)
		goto io;
	tmp[0] = 0;
	/* the rename itself must survive a crash */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0)
		fsync(dfd);
	rc = 0;
	goto out;
io:
	rc = -errno;
	snprintf(err, errlen, "writing %s: %s", path, strerror(errno));
out:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	if (tmp[0])
		unlink(tmp);
	if (text) {
		explicit_bzero(text, strlen(text));
		free(text);
	}
	json_decref(relays);
	json_decref(root);
	return rc;
}
