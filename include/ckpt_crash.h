/*
 * ckpt_crash.h - numbered crash points for crash-safety tests.
 *
 *   ckpt_crash_point   kill the process at a chosen durable step
 *
 * With KILN_CRASH_POINT=<op>:<n> in the environment (for example
 * "ckpt_write:6"), the process kills itself with SIGKILL the first time it
 * reaches point n of op, so a test can check what a crash at that step
 * leaves behind. "<op>:<n>:parent" kills the parent first: a runner's run
 * child takes its runner with it, as when the whole host goes down, so no
 * one resumes the run before the test has acted. Unset (production), a
 * point costs one getenv(). The points are listed in docs/CHECKPOINTS.md.
 */
#ifndef KILN_CKPT_CRASH_H
#define KILN_CKPT_CRASH_H

#define CKPT_CRASH_ENV "KILN_CRASH_POINT"

void ckpt_crash_point(const char *op, unsigned point);

#endif
