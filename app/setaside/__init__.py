"""Items a background loop could not process, kept out of its way with their error.

A loop that serves many (the sweeper, the dispatcher, the event writer) retries a failing
batch item by item; an item that still fails alone is recorded here, visible through
`GET /v1/set-aside` and `radar_set_aside_total`, and the loop goes on with the others.
"""
