"""Pure functions shared unchanged by Spark, Flink and the tests: photo decoding, hashing,
feature extraction, quarantine records and the scorer registry."""
