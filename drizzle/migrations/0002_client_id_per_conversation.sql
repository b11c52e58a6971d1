-- A clientMessageId is its sender's within one conversation: the same id sent to another
-- conversation is another message, never the first one (which that conversation's members may
-- not see). The new key is looser than the old one, so it holds for every existing row; it is
-- built before the old one goes, so no moment is without a key.
CREATE UNIQUE INDEX "messages_sender_conversation_client_id_key" ON "messages" USING btree ("sender_id","conversation_id","client_message_id");--> statement-breakpoint
DROP INDEX "messages_sender_client_id_key";
