/* Helpers shared by the Kafka producer (broker_kafka.c) and the Kafka subscriptions
 * (kafka_subs.c). Internal to the eventbus. */
#ifndef EB_KAFKA_H
#define EB_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Sets n key/value pairs on conf; logs and returns -1 on the first one refused. */
int eb_kafka_conf_set(rd_kafka_conf_t *conf, const char *const (*kv)[2], size_t n);

/* librdkafka's own log lines, written as ours (one JSON object per line). */
void eb_kafka_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* Creates topic with the given partitions and retention; an existing topic is fine.
 * Waits at most a few seconds, less when *stop becomes non-zero. Returns 0 when the
 * topic exists, -1 with a message in err. */
int eb_kafka_create_topic(rd_kafka_t *rk, const char *topic, int partitions, int64_t retention_ms,
                          const atomic_int *stop, char *err, size_t errlen);

#endif
