/* ws_txn.c - all-or-nothing file changes to a workspace (see ws_txn.h). */
#include "ws_txn.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileutil.h"
#include "log.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"
#include "workspace.h"

enum change_kind { CHANGE_WRITE, CHANGE_DELETE };

/* One staged change: rel in the workspace, its staging entry by name. */
struct ws_txn_change {
	enum change_kind kind;
	char *rel;
	char stage[24];
};

/*
 * One step apply made, and how to take it back:
 *   STEP_MKDIR     rel was created as an empty folder    -> rmdir
 *   STEP_ADD       stage moved in as rel (rel was new)   -> move it back out
 *   STEP_EXCHANGE  rel and stage traded places           -> trade again
 *   STEP_REMOVE    rel moved out to stage                -> move it back in
 */
enum step_kind { STEP_MKDIR, STEP_ADD, STEP_EXCHANGE, STEP_REMOVE };

struct ws_txn_step {
	enum step_kind kind;
	const char *rel;   /* owned by the change, or by the step for MKDIR */
	const char *stage;
	char *owned;
};

int ws_txn_begin(struct ws_txn *t, const struct workspace *ws, const char *staging_dir,
		 struct strbuf *err)
{
	memset(t, 0, sizeof(*t));
	t->ws = ws;
	t->stagefd = -1;
	if (mkdir(staging_dir, 0700) < 0) {
		int e = errno;

		strbuf_addf(err, "cannot create staging folder %s: %s", staging_dir, strerror(e));
		return -e;
	}
	t->staging = xstrdup(staging_dir);
	t->stagefd = open(staging_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (t->stagefd < 0) {
		int e = errno;

		strbuf_addf(err, "cannot open staging folder %s: %s", staging_dir, strerror(e));
		return -e;
	}
	return 0;
}

static struct ws_txn_change *add_change(struct ws_txn *t, enum change_kind kind, const char *rel)
{
	struct ws_txn_change *c;

	t->changes = xrealloc(t->changes, t->nchanges + 1, sizeof(*t->changes));
	c = &t->changes[t->nchanges];
	c->kind = kind;
	c->rel = xstrdup(rel);
	/* flat names: the staging folder needs no folders of its own */
	snprintf(c->stage, sizeof(c->stage), "%c%zu", kind == CHANGE_WRITE ? 'n' : 'd', t->nchanges);
	t->nchanges++;
	return c;
}

int ws_txn_write(struct ws_txn *t, const char *rel, const void *data, size_t len, mode_t mode,
		 struct strbuf *err)
{
	struct ws_txn_change *c = add_change(t, CHANGE_WRITE, rel);
	int rc = file_write_atomic_at(t->stagefd, c->stage, data, len, mode);

	if (rc < 0)
		strbuf_addf(err, "%s: cannot stage the new content: %s", rel, strerror(-rc));
	return rc;
}

void ws_txn_delete(struct ws_txn *t, const char *rel)
{
	add_change(t, CHANGE_DELETE, rel);
}

static void add_step(struct ws_txn *t, enum step_kind kind, const char *rel, const char *stage,
		     char *owned)
{
	struct ws_txn_step *s;

	t->steps = xrealloc(t->steps, t->nsteps + 1, sizeof(*t->steps));
	s = &t->steps[t->nsteps++];
	s->kind = kind;
	s->rel = owned ? owned : rel;
	s->stage = stage;
	s->owned = owned;
}

/* A confined fd of folder rel of the workspace ("" = the root), or -errno. */
static int open_folder(const struct ws_txn *t, const char *rel, struct strbuf *err)
{
	struct tool_error terr;
	int fd;

	if (!*rel) {
		fd = fcntl(t->ws->dirfd, F_DUPFD_CLOEXEC, 0);
		return fd < 0 ? -errno : fd;
	}
	fd = ws_open(t->ws, rel, O_RDONLY | O_DIRECTORY, 0, &terr);
	if (fd >= 0)
		return fd;
	if (!strcmp(terr.code, "not_found"))
		return -ENOENT;
	strbuf_addf(err, "%s", terr.message);
	return !strcmp(terr.code, "not_a_directory") ? -ENOTDIR : -EIO;
}

/*
 * The folder holding rel, *base pointed at rel's last component. With
 * create, missing folders are made one at a time, each mkdirat() relative
 * to a parent that was itself opened confined, and journaled.
 */
static int open_parent(struct ws_txn *t, const char *rel, const char **base, int create,
		       struct strbuf *err)
{
	struct strbuf dir = STRBUF_INIT;
	const char *slash = strrchr(rel, '/');
	int fd = -1, prev = -1;
	size_t i;

	*base = slash ? slash + 1 : rel;
	if (slash)
		strbuf_add(&dir, rel, (size_t)(slash - rel));
	fd = open_folder(t, strbuf_str(&dir), err);
	if (fd != -ENOENT || !create)
		goto out;
	/* Walk down from the root, creating what is missing. */
	prev = open_folder(t, "", err);
	for (i = 0; prev >= 0 && i <= dir.len; i++) {
		const char *comp;
		int next;

		if (i < dir.len && dir.buf[i] != '/')
			continue;
		dir.buf[i] = '\0';
		next = open_folder(t, dir.buf, err);
		if (next == -ENOENT) {
			comp = strrchr(dir.buf, '/');
			comp = comp ? comp + 1 : dir.buf;
			if (mkdirat(prev, comp, 0755) < 0) {
				next = -errno;
				strbuf_addf(err, "%s: cannot create the folder: %s", dir.buf, strerror(errno));
			} else {
				fsync(prev);
				add_step(t, STEP_MKDIR, NULL, NULL, xstrdup(dir.buf));
				next = open_folder(t, dir.buf, err);
			}
		}
		close(prev);
		prev = next;
		if (i < dir.len)
			dir.buf[i] = '/';
	}
	fd = prev;
out:
	if (fd < 0 && !err->len)
		strbuf_addf(err, "%s: cannot open its folder: %s", rel, strerror(-fd));
	strbuf_release(&dir);
	return fd;
}

static int move_error(const char *rel, const char *what, struct strbuf *err)
{
	int e = errno;

	strbuf_addf(err, "%s: cannot %s: %s", rel, what, strerror(e));
	return -e;
}

static int apply_change(struct ws_txn *t, const struct ws_txn_change *c, struct strbuf *err)
{
	const char *base;
	struct stat st;
	int pfd, ret = 0;

	pfd = open_parent(t, c->rel, &base, c->kind == CHANGE_WRITE, err);
	if (pfd < 0)
		return pfd;
	if (c->kind == CHANGE_DELETE) {
		if (renameat2(pfd, base, t->stagefd, c->stage, RENAME_NOREPLACE) < 0)
			ret = move_error(c->rel, "move it out of the workspace", err);
		else
			add_step(t, STEP_REMOVE, c->rel, c->stage, NULL);
	} else if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (!S_ISREG(st.st_mode) || st.st_nlink > 1) {
			strbuf_addf(err, "%s: is not a plain file any more", c->rel);
			ret = -EEXIST;
		} else if (renameat2(t->stagefd, c->stage, pfd, base, RENAME_EXCHANGE) < 0) {
			ret = move_error(c->rel, "swap in the new content", err);
		} else {
			add_step(t, STEP_EXCHANGE, c->rel, c->stage, NULL);
		}
	} else if (errno != ENOENT) {
		ret = move_error(c->rel, "look at it", err);
	} else if (renameat2(t->stagefd, c->stage, pfd, base, RENAME_NOREPLACE) < 0) {
		ret = move_error(c->rel, "move the new file in", err);
	} else {
		add_step(t, STEP_ADD, c->rel, c->stage, NULL);
	}
	if (ret == 0)
		fsync(pfd);
	close(pfd);
	return ret;
}

static int undo_step(struct ws_txn *t, const struct ws_txn_step *s, struct strbuf *err)
{
	const char *base;
	int pfd, rc = 0;

	pfd = open_parent(t, s->rel, &base, 0, err);
	if (pfd < 0)
		return pfd;
	switch (s->kind) {
	case STEP_MKDIR:
		if (unlinkat(pfd, base, AT_REMOVEDIR) < 0 && errno != ENOTEMPTY)
			rc = move_error(s->rel, "remove the folder it created", err);
		break;
	case STEP_ADD:
		if (renameat2(pfd, base, t->stagefd, s->stage, RENAME_NOREPLACE) < 0)
			rc = move_error(s->rel, "take the new file out again", err);
		break;
	case STEP_EXCHANGE:
		if (renameat2(t->stagefd, s->stage, pfd, base, RENAME_EXCHANGE) < 0)
			rc = move_error(s->rel, "put the old content back", err);
		break;
	case STEP_REMOVE:
		if (renameat2(t->stagefd, s->stage, pfd, base, RENAME_NOREPLACE) < 0)
			rc = move_error(s->rel, "put the deleted file back", err);
		break;
	}
	if (rc == 0)
		fsync(pfd);
	close(pfd);
	return rc;
}

/* Undoes the journal, last step first; goes on past a failing step so
 * that as much as possible is back, and reports the first failure. */
static int undo_all(struct ws_txn *t, struct strbuf *err)
{
	struct strbuf why = STRBUF_INIT;
	int first = 0;

	while (t->nsteps) {
		struct ws_txn_step *s = &t->steps[t->nsteps - 1];
		int rc;

		strbuf_reset(&why);
		rc = undo_step(t, s, &why);
		if (rc < 0) {
			log_error("workspace %s: undo failed: %s", t->ws->root, why.buf);
			if (!first) {
				first = rc;
				strbuf_addf(err, "%sundoing it failed too (%s): the workspace may be "
					    "partly changed", err->len ? "; " : "", why.buf);
			}
		}
		free(s->owned);
		t->nsteps--;
	}
	fsync(t->stagefd);
	strbuf_release(&why);
	return first;
}

int ws_txn_apply(struct ws_txn *t, struct strbuf *err)
{
	int pass, rc;
	size_t i;

	for (pass = 0; pass < 2; pass++) {
		/* deletions first: a file "a" may go where a folder "a/" comes */
		enum change_kind kind = pass == 0 ? CHANGE_DELETE : CHANGE_WRITE;

		for (i = 0; i < t->nchanges; i++) {
			if (t->changes[i].kind != kind)
				continue;
			rc = apply_change(t, &t->changes[i], err);
			if (rc < 0) {
				undo_all(t, err);
				return rc;
			}
		}
	}
	fsync(t->stagefd);
	return 0;
}

int ws_txn_undo(struct ws_txn *t, struct strbuf *err)
{
	return undo_all(t, err);
}

void ws_txn_end(struct ws_txn *t)
{
	size_t i;

	if (t->stagefd >= 0)
		close(t->stagefd);
	if (t->staging && rm_rf(t->staging) < 0)
		log_warn("cannot remove staging folder %s", t->staging);
	for (i = 0; i < t->nsteps; i++)
		free(t->steps[i].owned);
	for (i = 0; i < t->nchanges; i++)
		free(t->changes[i].rel);
	free(t->steps);
	free(t->changes);
	free(t->staging);
	memset(t, 0, sizeof(*t));
	t->stagefd = -1;
}

void ws_txn_clear_stale(const char *parent_dir, const char *prefix)
{
	struct strbuf path = STRBUF_INIT;
	size_t plen = strlen(prefix);
	struct dirent *de;
	DIR *d = opendir(parent_dir);

	while (d && (de = readdir(d))) {
		if (strncmp(de->d_name, prefix, plen))
			continue;
		strbuf_reset(&path);
		strbuf_addf(&path, "%s/%s", parent_dir, de->d_name);
		log_warn("removing %s, left by an interrupted change of a workspace", path.buf);
		rm_rf(path.buf);
	}
	if (d)
		closedir(d);
	strbuf_release(&path);
}
