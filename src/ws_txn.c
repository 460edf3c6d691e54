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

#include <json.h>

#include "ckpt_crash.h"
#include "fileutil.h"
#include "log.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"
#include "workspace.h"

enum change_kind { CHANGE_WRITE, CHANGE_DELETE };

/* One staged change: rel in the workspace, its staging entry by name, and
 * the inode that moves (the new content of a write, the file a delete takes
 * out), by which recovery tells whether a rename happened. */
struct ws_txn_change {
	enum change_kind kind;
	char *rel;
	char stage[24];
	ino_t ino;
};

/* In the staging folder beside the stage entries (n<i>, d<i>): the plan,
 * durable before the first rename, and the mark of an undo under way. */
#define JOURNAL_NAME "journal"
#define UNDO_MARK "undo"
#define JOURNAL_CAP (16u << 20)

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

/* The inode of a staging entry, 0 when it is missing. */
static ino_t stage_ino(const struct ws_txn *t, const char *stage)
{
	struct stat st;

	return fstatat(t->stagefd, stage, &st, AT_SYMLINK_NOFOLLOW) == 0 ? st.st_ino : 0;
}

int ws_txn_write(struct ws_txn *t, const char *rel, const void *data, size_t len, mode_t mode,
		 struct strbuf *err)
{
	struct ws_txn_change *c = add_change(t, CHANGE_WRITE, rel);
	int rc = file_write_atomic_at(t->stagefd, c->stage, data, len, mode);

	if (rc == 0) {
		c->ino = stage_ino(t, c->stage);
		if (!c->ino)
			rc = -EIO;
	}
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
	if (fd != -ENOENT || !create || !slash)
		goto out; /* (the root itself is never missing) */
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

/* Undoes the steps, last first; goes on past a failing step so that as
 * much as possible is back, and reports the first failure. The undo mark
 * goes down first: a crash from here on is recovered backwards. */
static int undo_all(struct ws_txn *t, struct strbuf *err)
{
	struct strbuf why = STRBUF_INIT;
	int first = 0, rc;

	rc = file_write_atomic_at(t->stagefd, UNDO_MARK, "", 0, 0600);
	if (rc < 0)
		log_error("workspace %s: cannot mark the undo: %s", t->ws->root, strerror(-rc));
	ckpt_crash_point("ws_txn_undo", 1);
	while (t->nsteps) {
		struct ws_txn_step *s = &t->steps[t->nsteps - 1];

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
		ckpt_crash_point("ws_txn_undo", 2);
	}
	fsync(t->stagefd);
	strbuf_release(&why);
	return first;
}

/* The inode of rel in the workspace: 0 when it (or its folder) is missing,
 * -errno on another failure. */
static long long ws_ino(struct ws_txn *t, const char *rel, struct strbuf *err)
{
	const char *base;
	struct stat st;
	long long ino;
	int pfd = open_parent(t, rel, &base, 0, err);

	if (pfd == -ENOENT || pfd == -ENOTDIR) {
		strbuf_reset(err);
		return 0;
	}
	if (pfd < 0)
		return pfd;
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0)
		ino = (long long)st.st_ino;
	else
		ino = errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	close(pfd);
	return ino;
}

/* The plan, durable before anything in the workspace moves. */
static int journal_write(struct ws_txn *t, struct strbuf *err)
{
	json_object *doc = json_object_new_object(), *list = json_object_new_array();
	const char *text;
	size_t i;
	int rc;

	for (i = 0; i < t->nchanges; i++) {
		struct ws_txn_change *c = &t->changes[i];
		json_object *o = json_object_new_object();

		if (c->kind == CHANGE_DELETE) {
			long long ino = ws_ino(t, c->rel, err);

			if (ino < 0) {
				json_object_put(o);
				rc = (int)ino;
				goto out;
			}
			c->ino = (ino_t)ino;
		}
		json_object_object_add(o, "kind", json_object_new_string(c->kind == CHANGE_WRITE ? "write" : "delete"));
		json_object_object_add(o, "path", json_object_new_string(c->rel));
		json_object_object_add(o, "stage", json_object_new_string(c->stage));
		json_object_object_add(o, "ino", json_object_new_int64((int64_t)c->ino));
		json_object_array_add(list, o);
	}
	json_object_object_add(doc, "changes", list);
	list = NULL;
	text = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN);
	rc = file_write_atomic_at(t->stagefd, JOURNAL_NAME, text, strlen(text), 0600);
	if (rc == 0 && fsync(t->stagefd) < 0)
		rc = -errno;
	if (rc < 0)
		strbuf_addf(err, "cannot write the journal of the change: %s", strerror(-rc));
out:
	json_object_put(list);
	json_object_put(doc);
	return rc;
}

int ws_txn_apply(struct ws_txn *t, struct strbuf *err)
{
	int pass, rc, done = 0;
	size_t i;

	rc = journal_write(t, err);
	if (rc < 0)
		return rc;
	ckpt_crash_point("ws_txn_apply", 1);
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
			done++;
			if (done == 1)
				ckpt_crash_point("ws_txn_apply", 2);
			if (done == (int)(t->nchanges + 1) / 2)
				ckpt_crash_point("ws_txn_apply", 3);
		}
	}
	fsync(t->stagefd);
	ckpt_crash_point("ws_txn_apply", 4);
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

/*
 * Recovery: each change of the journal is redone (forwards) or undone
 * (backwards, under the undo mark) when it has not been already, told by
 * where its inode is now. Every step is idempotent, so a crash during
 * recovery is recovered by the next one.
 */
/* One rename between stage entry stage and rel (to_ws: into the
 * workspace, else out of it), in rel's folder (made when create), durable. */
static int move_between(struct ws_txn *t, const char *rel, const char *stage, int to_ws, int create,
			unsigned int flags, const char *what, struct strbuf *err)
{
	const char *base;
	int pfd = open_parent(t, rel, &base, create, err), rc;

	if (pfd < 0)
		return pfd;
	rc = to_ws ? renameat2(t->stagefd, stage, pfd, base, flags)
		   : renameat2(pfd, base, t->stagefd, stage, flags);
	if (rc < 0)
		rc = move_error(rel, what, err);
	else
		fsync(pfd);
	close(pfd);
	return rc;
}

/* rmdir of rel when it is an empty folder: 0, or -1 (it is not). */
static int remove_empty_dir(struct ws_txn *t, const char *rel)
{
	struct strbuf why = STRBUF_INIT;
	const char *base;
	int pfd = open_parent(t, rel, &base, 0, &why), rc = -1;

	if (pfd >= 0 && unlinkat(pfd, base, AT_REMOVEDIR) == 0) {
		fsync(pfd);
		rc = 0;
	}
	if (pfd >= 0)
		close(pfd);
	strbuf_release(&why);
	return rc;
}

static int redo_change(struct ws_txn *t, const struct ws_txn_change *c, struct strbuf *err)
{
	long long here = ws_ino(t, c->rel, err);

	if (here < 0)
		return (int)here;
	if (c->kind == CHANGE_DELETE) {
		if (here == 0 || (ino_t)here != c->ino)
			return 0; /* moved out already */
		return move_between(t, c->rel, c->stage, 0, 0, RENAME_NOREPLACE,
				    "move it out of the workspace", err);
	}
	if (here != 0 && (ino_t)here == c->ino)
		return 0; /* moved in already */
	if (stage_ino(t, c->stage) != c->ino) {
		strbuf_addf(err, "%s: its new content is neither staged nor in place", c->rel);
		return -ENOENT;
	}
	return move_between(t, c->rel, c->stage, 1, 1, here ? RENAME_EXCHANGE : RENAME_NOREPLACE,
			    "move the new content in", err);
}

static int unwind_change(struct ws_txn *t, const struct ws_txn_change *c, struct strbuf *err)
{
	struct strbuf dir = STRBUF_INIT;
	long long here = ws_ino(t, c->rel, err);
	char *slash;
	int rc;

	if (here < 0)
		return (int)here;
	if (c->kind == CHANGE_DELETE) {
		if (stage_ino(t, c->stage) != c->ino || c->ino == 0)
			return 0; /* never moved out, or back already */
		/* a folder that a write made where this file was is empty by now */
		if (here)
			remove_empty_dir(t, c->rel);
		return move_between(t, c->rel, c->stage, 1, 1, RENAME_NOREPLACE,
				    "put the deleted file back", err);
	}
	if (here == 0 || (ino_t)here != c->ino)
		return 0; /* never moved in, or moved back */
	/* the old content waits under the stage name when there was one */
	rc = move_between(t, c->rel, c->stage, 0, 0, stage_ino(t, c->stage) ? RENAME_EXCHANGE : RENAME_NOREPLACE,
			  "take the new content out again", err);
	/* the folders the write needed go with it, deepest first */
	strbuf_addstr(&dir, c->rel);
	while (rc == 0 && (slash = strrchr(dir.buf, '/'))) {
		*slash = '\0';
		dir.len = (size_t)(slash - dir.buf);
		if (remove_empty_dir(t, dir.buf) < 0)
			break;
	}
	strbuf_release(&dir);
	return rc;
}

/* Loads the journal of staging folder t->stagefd: 1, 0 when there is none
 * (the change never got to its first rename), -1 when it is unreadable. */
static int journal_load(struct ws_txn *t, struct strbuf *err)
{
	struct strbuf text = STRBUF_INIT;
	json_object *doc = NULL, *list, *o, *v;
	size_t i, n;
	int rc = file_read_capped_at(t->stagefd, JOURNAL_NAME, JOURNAL_CAP, &text), ret = -1;

	if (rc == -ENOENT) {
		ret = 0;
		goto out;
	}
	if (rc < 0 || !(doc = json_tokener_parse(text.buf)) ||
	    !json_object_object_get_ex(doc, "changes", &list) || !json_object_is_type(list, json_type_array))
		goto bad;
	n = json_object_array_length(list);
	for (i = 0; i < n; i++) {
		struct ws_txn_change *c;
		const char *kind, *path, *stage;

		o = json_object_array_get_idx(list, i);
		kind = json_object_object_get_ex(o, "kind", &v) ? json_object_get_string(v) : NULL;
		path = json_object_object_get_ex(o, "path", &v) ? json_object_get_string(v) : NULL;
		stage = json_object_object_get_ex(o, "stage", &v) ? json_object_get_string(v) : NULL;
		if (!kind || !path || !stage || !json_object_object_get_ex(o, "ino", &v) ||
		    (strcmp(kind, "write") && strcmp(kind, "delete")))
			goto bad;
		c = add_change(t, !strcmp(kind, "write") ? CHANGE_WRITE : CHANGE_DELETE, path);
		c->ino = (ino_t)json_object_get_int64(v);
		if (strcmp(c->stage, stage))
			goto bad; /* names are given in order: n0, d1, ... */
	}
	ret = 1;
	goto out;
bad:
	strbuf_addf(err, "its journal is unreadable (%s)", rc < 0 ? strerror(-rc) : "not the expected JSON");
out:
	json_object_put(doc);
	strbuf_release(&text);
	return ret;
}

/* Brings the workspace to one side of the change in folder staging:
 * 0 (the folder can go), or -1 with err. */
static int recover_one(const struct workspace *ws, const char *staging, struct strbuf *err)
{
	struct ws_txn t;
	struct strbuf why = STRBUF_INIT;
	int backwards, loaded, rc = 0, pass;
	size_t i;

	memset(&t, 0, sizeof(t));
	t.ws = ws;
	t.stagefd = open(staging, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (t.stagefd < 0) {
		strbuf_addf(err, "%s: %s", staging, strerror(errno));
		return -1;
	}
	loaded = journal_load(&t, &why);
	if (loaded <= 0) {
		rc = loaded;
		goto out;
	}
	backwards = faccessat(t.stagefd, UNDO_MARK, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
	/* the order of ws_txn_apply (deletions, then writes), or its reverse */
	for (pass = 0; pass < 2 && rc == 0; pass++) {
		enum change_kind kind = (pass == 0) != backwards ? CHANGE_DELETE : CHANGE_WRITE;

		for (i = 0; i < t.nchanges && rc == 0; i++) {
			const struct ws_txn_change *c = &t.changes[backwards ? t.nchanges - 1 - i : i];

			if (c->kind == kind)
				rc = backwards ? unwind_change(&t, c, &why) : redo_change(&t, c, &why);
		}
	}
	if (rc == 0) {
		fsync(t.stagefd);
		log_warn("workspace %s: an interrupted change was %s (%zu files)", ws->root,
			 backwards ? "undone" : "completed", t.nchanges);
	}
out:
	if (rc < 0)
		strbuf_addf(err, "%s: %s", staging, why.buf);
	close(t.stagefd);
	t.stagefd = -1;
	ws_txn_end(&t);
	strbuf_release(&why);
	return rc < 0 ? -1 : 0;
}

int ws_txn_recover(const struct workspace *ws, const char *parent_dir, const char *prefix,
		   struct strbuf *err)
{
	struct strbuf path = STRBUF_INIT;
	size_t plen = strlen(prefix);
	struct dirent *de;
	DIR *d = opendir(parent_dir);
	int ret = 0;

	while (d && (de = readdir(d))) {
		if (strncmp(de->d_name, prefix, plen))
			continue;
		strbuf_reset(&path);
		strbuf_addf(&path, "%s/%s", parent_dir, de->d_name);
		if (recover_one(ws, path.buf, err) < 0) {
			/* its old files stay: the next recovery tries again */
			ret = -1;
			continue;
		}
		if (rm_rf(path.buf) < 0)
			log_warn("cannot remove staging folder %s", path.buf);
	}
	if (d)
		closedir(d);
	strbuf_release(&path);
	return ret;
}
