-- Token renewal (POST /v1/tokens/renew): a renewed token names the token it replaced. One
-- renewal per token (the unique index), so a token cannot fan out into many; revoking a token
-- revokes the tokens renewed from it, so a leaked token's renewals die with it.

ALTER TABLE agent_tokens ADD COLUMN renewed_from text REFERENCES agent_tokens (id) ON DELETE CASCADE;
CREATE UNIQUE INDEX agent_tokens_renewed_from ON agent_tokens (renewed_from)
	WHERE renewed_from IS NOT NULL;
