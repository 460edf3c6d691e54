/* ckpt_admin.c - `kilnctl checkpoint verify|gc`: rows against archives. */
#include <stdlib.h>
#include <string.h>

#include "appstate.h"
#include "ckpt_store.h"
#include "config.h"
#include "db.h"
#include "kilnctl.h"
#include "strbuf.h"
#include "util.h"

/* Archives younger than this are never collected: a checkpoint's archive
 * is written before its row commits. */
#define GC_GRACE_SECONDS 3600

static int open_store(struct config *cfg, struct ckpt_store *st)
{
	struct strbuf err = STRBUF_INIT;
	int rc = app_ckpt_store_open(cfg, st, &err);

	if (rc < 0)
		fprintf(stderr, "kilnctl: checkpoint store %s/checkpoints: %s\n", cfg->state_dir, err.buf);
	strbuf_release(&err);
	return rc;
}

static int name_in(const struct db_result *r, size_t col, const char *name)
{
	size_t i;

	for (i = 0; i < r->nrows; i++)
		if (!strcmp(db_val(r, i, col), name))
			return 1;
	return 0;
}

/* Every checkpoint row (of one app when app_id > 0) against its archive. */
static int verify(struct config *cfg, struct db *db, int64_t app_id)
{
	struct strbuf err = STRBUF_INIT;
	struct ckpt_store st;
	struct ckpt_list list;
	struct db_result r, all;
	size_t i, bad = 0, orphans = 0;
	int rc;

	if (open_store(cfg, &st) < 0)
		return 1;
	if (app_id > 0)
		rc = db_query(db, &r, "SELECT id, app_id, archive, sha256 FROM checkpoints WHERE app_id = ? "
				      "ORDER BY id", "i", app_id);
	else
		rc = db_query(db, &r, "SELECT id, app_id, archive, sha256 FROM checkpoints ORDER BY id", "");
	if (rc < 0) {
		fprintf(stderr, "kilnctl: %s\n", db->errmsg);
		ckpt_store_close(&st);
		return 1;
	}
	for (i = 0; i < r.nrows; i++) {
		strbuf_reset(&err);
		if (ckpt_verify(&st, db_val(&r, i, 2), db_val(&r, i, 3), &err) < 0) {
			printf("BAD checkpoint %s (app %s) %s: %s\n", db_val(&r, i, 0), db_val(&r, i, 1),
			       db_val(&r, i, 2), err.buf);
			bad++;
		}
	}
	/* orphans are judged against every row, whatever was checked */
	if (db_query(db, &all, "SELECT archive FROM checkpoints", "") == 0) {
		if (ckpt_list(&st, &list, &err) == 0) {
			for (i = 0; i < list.n; i++)
				if (!name_in(&all, 0, list.names[i]))
					orphans++;
			ckpt_list_release(&list);
		}
		db_result_free(&all);
	}
	printf("%zu checkpoints checked, %zu bad; %zu archives referenced by no row "
	       "(kilnctl checkpoint gc removes them)\n", r.nrows, bad, orphans);
	db_result_free(&r);
	ckpt_store_close(&st);
	strbuf_release(&err);
	return bad ? 1 : 0;
}

/* Retention: beyond each app's newest N, checkpoints older than the age
 * limit go, unless the draft or the published revision still needs them. */
static int retention(struct config *cfg, struct db *db, int dry_run)
{
	static const char *where =
		"FROM checkpoints c WHERE c.created_at < NOW(3) - INTERVAL ? DAY "
		"AND (SELECT COUNT(*) FROM checkpoints n WHERE n.app_id = c.app_id AND n.id > c.id) >= ? "
		"AND c.id NOT IN (SELECT r.checkpoint_id FROM app_revisions r JOIN apps a "
		"ON a.id = r.app_id WHERE r.checkpoint_id IS NOT NULL AND "
		"(r.id = a.draft_revision_id OR r.id = a.published_revision_id))";
	struct strbuf sql = STRBUF_INIT;
	struct db_result r;
	int64_t n;
	int ret = 0;

	strbuf_addf(&sql, "SELECT COUNT(*) %s", where);
	if (db_query(db, &r, sql.buf, "ii", cfg->checkpoint_max_age_days, cfg->checkpoint_keep_newest) < 0) {
		ret = -1;
		goto out;
	}
	n = db_int(&r, 0, 0);
	db_result_free(&r);
	printf("retention: %lld checkpoint rows past the policy (keep newest %lld per app, max age %lld days)%s\n",
	       (long long)n, (long long)cfg->checkpoint_keep_newest, (long long)cfg->checkpoint_max_age_days,
	       dry_run ? " [dry run]" : "");
	if (dry_run || !n)
		goto out;
	strbuf_reset(&sql);
	strbuf_addf(&sql, "DELETE FROM checkpoints WHERE id IN (SELECT id FROM (SELECT c.id %s) AS doomed)", where);
	if (db_exec(db, sql.buf, "ii", cfg->checkpoint_max_age_days, cfg->checkpoint_keep_newest) < 0) {
		ret = -1;
		goto out;
	}
	/* Revisions keep their manifests; only their files go with the row.
	 * Unlinked after the delete, by what is actually gone: the policy
	 * evaluated twice could pick other rows once a new checkpoint lands. */
	if (db_exec(db, "UPDATE app_revisions r LEFT JOIN checkpoints c ON c.id = r.checkpoint_id "
			"SET r.checkpoint_id = NULL WHERE r.checkpoint_id IS NOT NULL AND c.id IS NULL", "") < 0)
		ret = -1;
out:
	if (ret < 0)
		fprintf(stderr, "kilnctl: retention: %s\n", db->errmsg);
	strbuf_release(&sql);
	return ret;
}

static int gc(struct config *cfg, struct db *db, int dry_run)
{
	struct strbuf err = STRBUF_INIT;
	struct ckpt_gc_stats stats;
	struct ckpt_store st;
	struct ckpt_list list;
	struct db_result r;
	const char **live;
	size_t i, orphans = 0;
	int ret = 1;

	if (retention(cfg, db, dry_run) < 0)
		return 1;
	if (open_store(cfg, &st) < 0)
		return 1;
	if (db_query(db, &r, "SELECT archive FROM checkpoints", "") < 0) {
		fprintf(stderr, "kilnctl: %s\n", db->errmsg);
		goto out_store;
	}
	if (dry_run) {
		if (ckpt_list(&st, &list, &err) == 0) {
			for (i = 0; i < list.n; i++)
				if (!name_in(&r, 0, list.names[i]))
					orphans++;
			ckpt_list_release(&list);
		}
		printf("gc: %zu archives are referenced by no row [dry run: nothing removed]\n", orphans);
		ret = 0;
		goto out_rows;
	}
	live = calloc(r.nrows + 1, sizeof(*live));
	if (!live)
		goto out_rows;
	for (i = 0; i < r.nrows; i++)
		live[i] = db_val(&r, i, 0);
	memset(&stats, 0, sizeof(stats));
	if (ckpt_gc(&st, live, r.nrows, GC_GRACE_SECONDS, &stats, &err) < 0) {
		fprintf(stderr, "kilnctl: gc: %s\n", err.buf);
	} else {
		printf("gc: %u archives kept, %u removed (%llu bytes freed), %u temp files removed, "
		       "%u rows name a missing archive\n", stats.archives_kept, stats.archives_removed,
		       (unsigned long long)stats.bytes_freed, stats.temps_removed, stats.live_missing);
		ret = stats.live_missing ? 1 : 0;
	}
	free(live);
out_rows:
	db_result_free(&r);
out_store:
	ckpt_store_close(&st);
	strbuf_release(&err);
	return ret;
}

int kilnctl_checkpoint(struct config *cfg, struct db *db, int argc, char **argv)
{
	int64_t app_id = 0;

	if (argc == 1 && !strcmp(argv[0], "verify"))
		return verify(cfg, db, 0);
	if (argc == 3 && !strcmp(argv[0], "verify") && !strcmp(argv[1], "--app") &&
	    parse_int64(argv[2], 1, INT64_MAX, &app_id) == 0)
		return verify(cfg, db, app_id);
	if (argc >= 1 && !strcmp(argv[0], "gc"))
		return gc(cfg, db, argc >= 2 && !strcmp(argv[1], "--dry-run"));
	fprintf(stderr, "usage: kilnctl checkpoint verify [--app ID] | checkpoint gc [--dry-run]\n");
	return 2;
}
