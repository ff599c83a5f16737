# vusb — the two commands a user needs:
#   make demo   install what is missing, build, run the demo (one webcam into two Linux guests)
#   make test   install what is missing, build, run every test (unit, integration, e2e, fuzz)
PRESET ?= default
BUILD  ?= build
JOBS   ?= $(shell nproc)
# Seconds per fuzzer in `make test` (a smoke run over the seed corpora; fuzz longer by hand:
# make fuzz FUZZ_SECONDS=600).
FUZZ_SECONDS ?= 10

.PHONY: all deps build test demo asan tsan fuzz bench clean format

all: build

deps:
	@scripts/deps.sh

build: deps
	@[ -f $(BUILD)/build.ninja ] || cmake --preset $(PRESET) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: build fuzz
	@cd $(BUILD) && ctest --output-on-failure -j 1 $(CTEST_ARGS)

demo: build
	@tests/e2e/demo.sh $(BUILD)

# ASan + UBSan build and the whole ctest suite under it.
asan: deps
	@[ -f build-asan/build.ninja ] || cmake --preset asan >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && ctest --output-on-failure -j 1 $(CTEST_ARGS)

# ThreadSanitizer build and the unit and integration tests under it (the guest lab's timing is
# for release and ASan builds).
tsan: deps
	@[ -f build-tsan/build.ninja ] || cmake --preset tsan >/dev/null
	@cmake --build build-tsan -j $(JOBS)
	@cd build-tsan && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ctest --output-on-failure -j 1 --timeout 900 -L 'unit|integration' $(CTEST_ARGS)

# libFuzzer targets (clang 16): build, then a short run of each over its seed corpus.
fuzz: deps
	@[ -f build-fuzz/build.ninja ] || cmake --preset fuzz >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@tests/fuzz/run_all.sh build-fuzz $(FUZZ_SECONDS)

bench: build
	@$(BUILD)/bin/vusb-bench stub

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i

clean:
	rm -rf build build-asan build-tsan build-release build-fuzz
