import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=80, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("SPIKEFORGE_HYPOTHESIS", "default"))
