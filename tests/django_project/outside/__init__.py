"""A package on the path that is not an installed app."""
