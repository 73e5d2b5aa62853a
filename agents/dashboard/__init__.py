"""The Platform Admin's page: live connector states, incidents with actions, trends."""
