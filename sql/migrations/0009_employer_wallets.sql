-- employers.wallet_id: the IntaSend wallet (wallets-as-a-service: a WORKING wallet per client) this
-- employer's salaries are paid from. NULL means the platform's default, the INTASEND_WALLET_ID setting (or
-- IntaSend's own default wallet when that is unset too). Set and cleared by
-- `payrun employer set-wallet`; `start_payroll` copies it into every outbox row's payload, so a payroll is
-- paid from the wallet its employer had when it started, whatever changes afterwards.
-- An id is an opaque token: no surrounding or inner whitespace, 1 to 64 characters.

ALTER TABLE employers
    ADD COLUMN wallet_id text NULL
        CONSTRAINT employers_wallet_id_check CHECK (wallet_id ~ '^\S{1,64}$');
