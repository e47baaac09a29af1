-- Where transactions came from: messages, offsets and Kafka timestamps per partition
-- (one row with a null partition for files and the generator).
SELECT
    _kafka_partition          AS kafka_partition,
    count(*)                  AS messages,
    min(_kafka_offset)        AS first_offset,
    max(_kafka_offset)        AS last_offset,
    count(_kafka_timestamp)   AS stamped
FROM transactions
GROUP BY _kafka_partition
