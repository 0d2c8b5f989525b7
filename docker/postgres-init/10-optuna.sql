-- Run once by the postgres image when its data volume is empty (/docker-entrypoint-initdb.d),
-- as POSTGRES_USER (sweeper), who then owns it. POSTGRES_DB (mlflow) is MLflow's tracking
-- store; this second database holds the Optuna studies (the driver's search.storage).
CREATE DATABASE optuna;
