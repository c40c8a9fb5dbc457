// jsonio.h: the one strict JSON reader for every JSON file PostShare reads
// (config.json, safetensors headers, sharded-model indexes, sharing plans).
//
// cJSON alone accepts things that make us read a different file than Python
// would: a duplicate key (cJSON returns the first value, Python's json and
// transformers the last), bytes that are not UTF-8 inside strings, and junk
// after the top-level value. ps_json_parse refuses all three, with the file and
// the key in the message. Nesting is bounded by cJSON (CJSON_NESTING_LIMIT).
#pragma once

#include <cjson/cJSON.h>
#include <stddef.h>

// Parse txt[0..len) (NULs after the value and whitespace are allowed). Returns the
// tree (cJSON_Delete it), or NULL with ps_err set: "<what>: not valid JSON (error
// near byte N)", "<what>: duplicate key: 'k' appears twice in \"<object>\"", "<what>:
// invalid UTF-8 in ...", "<what>: not valid JSON: unexpected text after the value ...".
cJSON *ps_json_parse(const char *txt, size_t len, const char *what);

// Write root to path (cJSON_Print, indented, with a final newline) atomically
// (ps_write_file_atomic). 0, or -1 with ps_err set.
int ps_json_write(const char *path, const cJSON *root);
