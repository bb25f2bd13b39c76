"""Why a delivery did not go through."""


class DeliveryError(Exception):
    """This attempt failed; a later one may succeed (the message never holds a webhook's full URL)."""


class PermanentDeliveryError(DeliveryError):
    """No attempt can succeed (e.g. a webhook address that is refused): fail at once."""
