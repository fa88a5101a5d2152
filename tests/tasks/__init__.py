"""Small user tasks the tests search on: models a user brings that are not image CNNs."""
