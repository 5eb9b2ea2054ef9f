/* Pins left behind by dead relays of this host. The default instance id is <hostname>-<pid>, so a
 * relay that crashed leaves <pin-root>/<hostname>-<pid>/ behind, and no later relay has that id
 * to clean it up at start. Those, and only those, are removed here. */
#include "log.h"
#include "relay.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

/* The pid in name if it is exactly <host>-<pid> (decimal, no sign, no leading zero), else 0. */
static pid_t default_id_pid(const char *name, const char *host)
{
	size_t hl = strlen(host);
	if (strncmp(name, host, hl) || name[hl] != '-')
		return 0;
	const char *s = name + hl + 1;
	if (*s < '1' || *s > '9')
		return 0;
	long pid = 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return 0;
		pid = pid * 10 + (*s - '0');
		if (pid > INT_MAX)
			return 0;
	}
	return (pid_t)pid;
}

/* Unlink the pins in dir (one level: a pin directory holds pinned maps and programs; empty
 * subdirectories go too). Returns how many were removed. */
static int remove_pins(int dfd)
{
	int n = 0, fd = dup(dfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (unlinkat(dfd, de->d_name, 0) == 0 ||
		    (errno == EISDIR && unlinkat(dfd, de->d_name, AT_REMOVEDIR) == 0))
			n++;
	}
	closedir(d);
	return n;
}

int relay_remove_stale_pins(const char *root, const char *host)
{
	DIR *d = opendir(root);
	if (!d) {
		if (errno != ENOENT)
			pr_warn("stale pins: cannot read %s: %s", root, strerror(errno));
		return 0;
	}
	int removed = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		pid_t pid = default_id_pid(de->d_name, host);
		if (pid <= 0 || pid == getpid())
			continue;
		if (kill(pid, 0) == 0 || errno != ESRCH)
			continue; /* alive (or not ours to signal): its relay may still use them */
		int dfd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dfd < 0)
			continue; /* not a directory */
		int pins = remove_pins(dfd);
		close(dfd);
		if (unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) < 0) {
			pr_warn("stale pins: cannot remove %s/%s (relay pid %d is gone): %s", root,
				de->d_name, (int)pid, strerror(errno));
			continue;
		}
		pr_info("stale pins: removed %s/%s with %d pin(s): relay pid %d is gone", root,
			de->d_name, pins, (int)pid);
		removed++;
	}
	closedir(d);
	return removed;
}
