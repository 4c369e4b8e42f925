-- Every App's redaction keys (the union), for readers that did not configure them.
SELECT key FROM {schema}.redact_keys ORDER BY key
