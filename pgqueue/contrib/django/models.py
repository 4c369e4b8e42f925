"""No models: jobs live in pgqueue's own tables. The module exists because Django sends
`post_migrate` only to apps that have one, and the app's catch-up migration listens to it."""
