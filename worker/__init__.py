"""What happens when a fire arrives: decode, claim, act, record.

Depends on `scheduler` (the model and the fire contract); `scheduler` never imports this.
"""
