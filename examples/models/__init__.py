"""Example models now live in ``gateway.examples``; these modules re-export them."""
