"""The observer of the choreographed saga: it follows every event, keeps each saga's story, and
serves it (/choreography/...) beside the dashboard. It takes no part in the saga.
"""
