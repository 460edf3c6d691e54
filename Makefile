# Kiln build. `make` builds everything; `make test` runs the whole suite
# against private MariaDB and nginx instances; `make demo` brings up the stack.

PKGS      := json-c libcurl libarchive
CC        ?= gcc
OPT       ?= -O2
CFLAGS    ?= $(OPT) -g
KILN_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wformat=2 \
	-Wno-missing-field-initializers -fno-strict-aliasing \
	-Iinclude $(shell pkg-config --cflags $(PKGS) libmariadb) \
	-include include/compat.h -D_GNU_SOURCE
LDLIBS    := $(shell pkg-config --libs $(PKGS) libmariadb) -lfcgi -lpthread
BUILD     ?= build

LIB_SRC   := $(wildcard src/*.c)
LIB_OBJ   := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
CMD_SRC   := $(wildcard src/cmd/*.c)
BINS      := $(CMD_SRC:src/cmd/%.c=$(BUILD)/bin/%)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)
# Each fuzz target linked to tests/fuzz/replay.c instead of libFuzzer: run
# by `make test` over its saved inputs (tests/fuzz/README.md).
REPLAY_BINS := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz-replay/%)

.PHONY: all unit-bins test demo stop asan fuzz valgrind bench soak lint tidy clean
all: $(BINS) $(UNIT_BINS) $(REPLAY_BINS)
unit-bins: $(UNIT_BINS) $(REPLAY_BINS)

Q := $(if $(V),,@)

$(BUILD)/obj/%.o: src/%.c $(wildcard include/*.h) Makefile
	@mkdir -p $(dir $@)
	@$(if $(V),:,echo "  CC      $<")
	$(Q)$(CC) $(KILN_CFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/libkiln.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/%: src/cmd/%.c $(BUILD)/libkiln.a
	@mkdir -p $(dir $@)
	@$(if $(V),:,echo "  LINK    $@")
	$(Q)$(CC) $(KILN_CFLAGS) $(CFLAGS) -o $@ $< $(BUILD)/libkiln.a $(LDLIBS) $(LDFLAGS)

$(BUILD)/tests/%: tests/unit/%.c tests/unit/harness.h $(BUILD)/libkiln.a
	@mkdir -p $(dir $@)
	@$(if $(V),:,echo "  LINK    $@")
	$(Q)$(CC) $(KILN_CFLAGS) $(CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libkiln.a $(LDLIBS) $(LDFLAGS)

$(BUILD)/fuzz-replay/%: tests/fuzz/%.c tests/fuzz/replay.c $(BUILD)/libkiln.a
	@mkdir -p $(dir $@)
	@$(if $(V),:,echo "  LINK    $@")
	$(Q)$(CC) $(KILN_CFLAGS) $(CFLAGS) -o $@ tests/fuzz/replay.c $< $(BUILD)/libkiln.a $(LDLIBS) $(LDFLAGS)

# The whole suite: unit tests and the fuzz corpus replay, then integration
# tests against a private stack.
test: all
	tools/run-tests $(BUILD)

# AddressSanitizer + UndefinedBehaviorSanitizer build, whole suite.
asan:
	$(MAKE) BUILD=build-asan CC=clang \
	  CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" test

fuzz:
	tools/run-fuzz $(BUILD) $${FUZZ_SECONDS:-60}

# The unit tests under valgrind: no error and no leak is tolerated.
# Debian 12's valgrind (3.19) does not know openat2(2), which every
# workspace path goes through, so the tests built on it run under ASan and
# LeakSanitizer (make asan) instead. bubblewrap cannot start under valgrind
# (its setrlimit calls are refused), so test_sandbox's containment tests
# are allowed to skip here only: make test and make asan run them for real.
VALGRIND_SKIP := test_workspace test_filetools test_manifest test_diskfull test_appstate test_ws_txn
valgrind: unit-bins
	@fail=0; for t in $(filter-out $(addprefix $(BUILD)/tests/,$(VALGRIND_SKIP)),$(UNIT_BINS)); do \
	  echo "== valgrind $$t"; \
	  KILN_UNDER_VALGRIND=1 KILN_ALLOW_SANDBOX_SKIP=1 valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \
	    --errors-for-leak-kinds=definite,indirect $$t > /tmp/kiln-valgrind.$$$$.log 2>&1 || { fail=1; tail -n 40 /tmp/kiln-valgrind.$$$$.log; }; \
	  grep -E "passed, [0-9]+ failed" /tmp/kiln-valgrind.$$$$.log | tail -n 1; \
	  rm -f /tmp/kiln-valgrind.$$$$.log; \
	done; exit $$fail

# Command one of the README: dependencies, build, whole stack, a live run.
demo:
	tools/install-deps
	$(MAKE) all
	tools/demo start

stop:
	tools/demo stop

# Long fault runs (100 runner kills across concurrent runs).
soak: all
	tools/soak $(BUILD) $${SOAK_KILLS:-100}

bench: all
	tools/bench/run-bench $(BUILD)

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --inline-suppr -Iinclude -I/usr/include/json-c -D_GNU_SOURCE \
	  --suppress=missingIncludeSystem --suppress=unknownMacro src tests/unit tests/fuzz

# clang-tidy with the checks in .clang-tidy, over every source file: one
# run per file (so `make -j2 tidy` uses both cores), remembered by a stamp
# until the file, a header or the checks change.
TIDY_STAMPS := $(patsubst %.c,$(BUILD)/tidy/%.ok,$(LIB_SRC) $(CMD_SRC))
tidy: $(TIDY_STAMPS)

$(BUILD)/tidy/%.ok: %.c $(wildcard include/*.h) .clang-tidy Makefile
	@mkdir -p $(dir $@)
	@$(if $(V),:,echo "  TIDY    $<")
	$(Q)clang-tidy --quiet $< -- -std=gnu11 -Iinclude \
	  $(shell pkg-config --cflags $(PKGS) libmariadb) -include include/compat.h -D_GNU_SOURCE
	@touch $@

clean:
	rm -rf build build-asan build-fuzz
