/*
 * stream_server.h - the serving model of GET .../runs/{id}/stream.
 *
 * Streams are long and mostly idle, so they do not get a pre-forked process
 * each. A stream process holds many streams, one small-stack thread per open
 * stream, and a single poller thread that asks MariaDB once per tick which
 * watched runs have new events (one query for all of them), loads only the
 * new events of those runs, and wakes their streams. Events of a run are
 * kept once per process, as ready-to-send SSE frames, shared by all streams
 * of that run.
 *
 *   stream_worker_main   pool entry point for prefork_run()
 */
#ifndef KILN_STREAM_SERVER_H
#define KILN_STREAM_SERVER_H

struct config;
struct worker_slot;

struct stream_server_args {
	struct config *cfg;
};

void stream_worker_main(void *arg, int listen_fd, struct worker_slot *slot);

#endif
