"""Order management: compliance, pre-trade risk, routing to the venue, and the life of every order."""
