"""The online updater (`teamu realtime`): a user's embedding rewritten within a second of their interaction.

Triggers on the app tables and raw_mixpanel.events queue the touched users (ml.online_queue) and NOTIFY; a
long-lived process with the promoted model's query tower loaded applies the queue: the users' features from
marts.user_features_live (the mart's own SQL, dbt_project/macros/user_features.sql), their vectors, and the
posts they engaged with that the marts don't hold yet, which ml.recommend_posts excludes at once. Dagster's
batch path stays the system of record; ml.keep_newer_online_user_embedding keeps it from overwriting a newer
online vector. No Dagster here; TensorFlow is imported when the towers are first needed.
"""
