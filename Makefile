# The two commands a newcomer needs are `make run` and `make test`; both install
# what is missing (scripts/deps.sh) and build first.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 20
JOBS       ?= $(shell nproc)
SOURCES    := $(shell find include src tests/unit fuzz -name '*.[ch]' 2>/dev/null)

.PHONY: all deps build asan run test unit system system-pg system-kafka format format-check fuzz fuzz-smoke bench clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DEVBUS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	@scripts/run.sh $(BUILD)

# Every test: format, both builds warning-free, unit and system tests under
# ASan+UBSan on SQLite, on PostgreSQL and on PostgreSQL + Kafka, and a short run
# of each fuzzer.
test: format-check build asan unit system system-pg system-kafka fuzz-smoke

unit: asan
	@cd $(ASAN_BUILD) && ctest --output-on-failure

system: asan
	@EVBUS_BIN_DIR=$(abspath $(ASAN_BUILD)) scripts/pytest.sh tests/system -q

# the same system tests with every service on PostgreSQL (a throwaway cluster)
system-pg: asan
	@EVBUS_TEST_BACKEND=pg EVBUS_BIN_DIR=$(abspath $(ASAN_BUILD)) scripts/pytest.sh tests/system -q

# once more on PostgreSQL with every eventbus relaying to a real Kafka broker
system-kafka: asan
	@EVBUS_TEST_BACKEND=pg EVBUS_TEST_BROKER=kafka EVBUS_BIN_DIR=$(abspath $(ASAN_BUILD)) \
		scripts/pytest.sh tests/system -q

format:
	@clang-format -i $(SOURCES)

format-check: deps
	@clang-format --dry-run -Werror $(SOURCES) && echo "format: ok"

fuzz: deps
	@cmake -S . -B $(FUZZ_BUILD) -DEVBUS_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_cloudevent fuzz_router fuzz_webhook

fuzz-smoke: fuzz
	@scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

bench: build
	@scripts/pytest.sh --version >/dev/null
	@EVBUS_BIN_DIR=$(abspath $(BUILD)) python3 bench/e2e_latency.py

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
