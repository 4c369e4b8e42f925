-- Rows of the stuck_jobs view, counted (warnings must not stop at a listing's limit).
SELECT count(*) FROM {schema}.stuck_jobs
