/*
 * kilnctl.h - kilnctl subcommands that live in their own modules.
 *
 *   kilnctl_checkpoint   checkpoint verify | checkpoint gc [--dry-run]
 */
#ifndef KILN_KILNCTL_H
#define KILN_KILNCTL_H

struct config;
struct db;

int kilnctl_checkpoint(struct config *cfg, struct db *db, int argc, char **argv);

#endif
