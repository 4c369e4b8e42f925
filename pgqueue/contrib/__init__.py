"""Integrations with frameworks; each imports its framework and is imported only by users who
chose it (`pgqueue.contrib.django`)."""
