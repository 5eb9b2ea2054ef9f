/* bpffs pin directories of the bpf data plane and the XDP guard (contract in pins.h). */
#include "pins.h"

#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#define BPFFS_ROOT "/sys/fs/bpf"

static int pin_path(char *buf, size_t len, const char *dir, const char *name)
{
	return snprintf(buf, len, "%s/%s", dir, name) >= (int)len ? -ENAMETOOLONG : 0;
}

/* The deepest existing ancestor of pd->path tells which filesystem the pins will be on: no
 * directory is created anywhere but on a bpffs. */
static int bpffs_check(struct pin_dir *pd)
{
	char path[PATH_MAX];
	struct statfs st;
	snprintf(path, sizeof(path), "%s", pd->path);
	while (statfs(path, &st) < 0) {
		char *slash = strrchr(path, '/');
		if (errno != ENOENT || !slash || slash == path) {
			int e = errno;
			log_msg(pd->fail_level, "%s: %s: %s", pd->who, path, strerror(e));
			return -e;
		}
		*slash = 0;
	}
	if (st.f_type == BPF_FS_MAGIC)
		return 0;
	if (strcmp(path, BPFFS_ROOT)) {
		log_msg(pd->fail_level, "%s: pin directory %s is not on a bpf filesystem "
			"(mount -t bpf bpf " BPFFS_ROOT ")", pd->who, pd->path);
		return -ENOTSUP;
	}
	if (mount("bpf", BPFFS_ROOT, "bpf", 0, "mode=0700") < 0) {
		int e = errno;
		log_msg(pd->fail_level,
			"%s: no bpffs at " BPFFS_ROOT " and mounting one failed: %s", pd->who,
			strerror(e));
		return -e;
	}
	pr_info("%s: mounted bpffs at " BPFFS_ROOT, pd->who);
	return 0;
}

int pins_prepare(struct pin_dir *pd, const char *path, const char *who,
		 enum log_level fail_level)
{
	int rc;
	pd->who = who;
	pd->fail_level = fail_level;
	pd->made = false;
	if (snprintf(pd->path, sizeof(pd->path), "%s", path) >= (int)sizeof(pd->path) ||
	    path[0] != '/') {
		log_msg(fail_level, "%s: pin directory '%s' must be an absolute path", who, path);
		pd->path[0] = 0;
		return -EINVAL;
	}
	if ((rc = bpffs_check(pd)))
		return rc;
	/* mkdir -p, 0700 */
	for (char *s = pd->path + 1;; s++) {
		if (*s != '/' && *s)
			continue;
		char c = *s;
		*s = 0;
		if (mkdir(pd->path, 0700) < 0 && errno != EEXIST) {
			rc = -errno;
			log_msg(fail_level, "%s: mkdir %s: %s", who, pd->path, strerror(-rc));
			*s = c;
			return rc;
		}
		if (!(*s = c))
			break;
	}
	pd->made = true;
	return 0;
}

/* Unlink obj's pins and prog_name's; returns how many there were. */
static int pins_unlink(const struct pin_dir *pd, struct bpf_object *obj, const char *prog_name)
{
	char path[PATH_MAX];
	struct bpf_map *map;
	int n = 0;
	if (obj)
		bpf_object__for_each_map(map, obj)
		{
			if (!bpf_map__is_internal(map) &&
			    !pin_path(path, sizeof(path), pd->path, bpf_map__name(map)))
				n += unlink(path) == 0;
		}
	if (prog_name && !pin_path(path, sizeof(path), pd->path, prog_name))
		n += unlink(path) == 0;
	return n;
}

int pins_create(struct pin_dir *pd, struct bpf_object *obj, struct bpf_program *prog,
		const char *prog_name)
{
	char path[PATH_MAX];
	struct bpf_map *map;
	int rc, stale = pins_unlink(pd, obj, prog ? prog_name : NULL);
	if (stale)
		pr_warn("%s: removed %d stale pin(s) from %s", pd->who, stale, pd->path);
	bpf_object__for_each_map(map, obj)
	{
		if (bpf_map__is_internal(map))
			continue;
		if ((rc = pin_path(path, sizeof(path), pd->path, bpf_map__name(map))) ||
		    (rc = bpf_map__pin(map, path)))
			goto fail;
	}
	if (prog && ((rc = pin_path(path, sizeof(path), pd->path, prog_name)) ||
		     (rc = bpf_program__pin(prog, path))))
		goto fail;
	return 0;
fail:
	log_msg(pd->fail_level, "%s: pin %s: %s", pd->who, path, strerror(-rc));
	return rc;
}

void pins_remove(struct pin_dir *pd, struct bpf_object *obj, const char *prog_name)
{
	if (!pd->made)
		return;
	pins_unlink(pd, obj, prog_name);
	if (rmdir(pd->path) == 0 || errno == ENOENT) {
		pd->made = false;
		return;
	}
	/* still holding pins (another object's of the same owner, removed by a later call) */
	if (errno != ENOTEMPTY)
		pr_warn("%s: cannot remove %s: %s", pd->who, pd->path, strerror(errno));
}
