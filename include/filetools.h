/*
 * filetools.h - the file tools the model calls on its app's workspace.
 *
 *   filetool_call          run one tool on the model's parsed JSON arguments
 *   filetool_exists        whether a name is a file tool
 *   filetool_add_schemas   OpenAI "tools" entries for the file tools
 *
 * Tools: list_files, read_file, search_files, write_file, delete_file,
 * rename_file, snapshot. Every path goes through workspace.h, so arguments
 * may be anything the model produces: wrong types, missing fields, escape
 * attempts. Failures come back as a tool_error the model can act on.
 *
 * Ignored folders (node_modules, dist, .git, the app's own): list_files,
 * search_files and snapshot never enter them, also when the path names a
 * file inside one or reaches one through a symlink ("is_ignored"); the
 * writing tools refuse them; read_file reads them, since a dependency's
 * source or a build's output is worth reading and confinement holds anyway.
 *
 * search_files: regular expressions are ere.h's (linear time, refused when
 * they would expand past its program limit). One call does a bounded amount
 * of work (bytes scanned plus matcher steps); past it the answer is the
 * matches so far with "truncated": true and a "note" saying the search
 * stopped early. write_file keeps the execute bit of a file it replaces.
 */
#ifndef KILN_FILETOOLS_H
#define KILN_FILETOOLS_H

#include <json.h>

struct strbuf;
struct tool_error;
struct workspace;

/* Runs one file tool. args: the model's arguments (any JSON value; NULL
 * counts as {}); unknown fields are ignored. On success returns 0, sets
 * *result to a new object for the model and appends a one-line summary for
 * the UI timeline (e.g. "wrote src/app.js (1.2 KiB)") to summary. On failure
 * returns -1 with *result = NULL and err filled. */
int filetool_call(const struct workspace *ws, const char *tool,
		  json_object *args, json_object **result,
		  struct strbuf *summary, struct tool_error *err);
int filetool_exists(const char *tool);
/* Appends {"type":"function","function":{"name","description","parameters"}}
 * for each file tool named in enabled (NULL-terminated; NULL = all). */
void filetool_add_schemas(json_object *tools, const char *const *enabled);

#endif
