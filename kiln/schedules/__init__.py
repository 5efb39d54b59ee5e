"""Schedules: ``compute/`` holds each op's TE; ``x86/`` the target's schedule templates."""
