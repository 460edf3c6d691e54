/*
 * handlers.h - every route handler of kiln-api, by module.
 * The route table that maps them to methods and paths is in router.c.
 */
#ifndef KILN_HANDLERS_H
#define KILN_HANDLERS_H

struct rctx;

/* api_health.c */
void h_health(struct rctx *c);
/* api_apps.c */
void h_apps_list(struct rctx *c);
void h_apps_create(struct rctx *c);
void h_app_get(struct rctx *c);
void h_app_update(struct rctx *c);
void h_app_delete(struct rctx *c);
/* api_revisions.c */
void h_revisions_list(struct rctx *c);
void h_revisions_create(struct rctx *c);
void h_revision_get(struct rctx *c);
void h_revision_file(struct rctx *c);
/* api_runs.c */
void h_runs_list(struct rctx *c);
void h_runs_create(struct rctx *c);
void h_run_get(struct rctx *c);
void h_run_cancel(struct rctx *c);
void h_run_events(struct rctx *c);
/* api_checkpoints.c */
void h_checkpoints_list(struct rctx *c);
void h_checkpoint_get(struct rctx *c);
void h_checkpoint_file(struct rctx *c);
void h_checkpoint_restore(struct rctx *c);
void h_checkpoint_revert_file(struct rctx *c);
void h_checkpoint_diff(struct rctx *c);
/* api_publish.c */
void h_publish(struct rctx *c);
void h_publishes_list(struct rctx *c);
void h_preview_url(struct rctx *c);
void h_preview_auth(struct rctx *c);

#endif
