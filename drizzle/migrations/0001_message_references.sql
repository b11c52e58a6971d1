-- messages.conversation_id and messages.sender_id are checked once per statement instead of by
-- foreign-key triggers row by row: each row's check locked its conversation's and its sender's
-- row, which cost the persistence worker about a third of every batch. The triggers below keep
-- what the constraints guaranteed: no message without its conversation and its sender, a
-- conversation's messages deleted with it, a sender with messages not deleted.
ALTER TABLE "messages" DROP CONSTRAINT "messages_conversation_id_conversations_id_fk";
--> statement-breakpoint
ALTER TABLE "messages" DROP CONSTRAINT "messages_sender_id_users_id_fk";
--> statement-breakpoint
CREATE FUNCTION "public"."messages_check_references"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (
    SELECT 1 FROM new_messages AS m
    WHERE NOT EXISTS (SELECT 1 FROM "public"."conversations" AS c WHERE c.id = m.conversation_id)
  ) THEN
    RAISE foreign_key_violation USING
      MESSAGE = 'insert or update on table "messages" violates foreign key: no such conversation',
      TABLE = 'messages', COLUMN = 'conversation_id';
  END IF;
  IF EXISTS (
    SELECT 1 FROM new_messages AS m
    WHERE NOT EXISTS (SELECT 1 FROM "public"."users" AS u WHERE u.id = m.sender_id)
  ) THEN
    RAISE foreign_key_violation USING
      MESSAGE = 'insert or update on table "messages" violates foreign key: no such sender',
      TABLE = 'messages', COLUMN = 'sender_id';
  END IF;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "messages_references_on_insert" AFTER INSERT ON "public"."messages"
  REFERENCING NEW TABLE AS new_messages
  FOR EACH STATEMENT EXECUTE FUNCTION "public"."messages_check_references"();
--> statement-breakpoint
CREATE TRIGGER "messages_references_on_update" AFTER UPDATE ON "public"."messages"
  REFERENCING NEW TABLE AS new_messages
  FOR EACH STATEMENT EXECUTE FUNCTION "public"."messages_check_references"();
--> statement-breakpoint
-- Run after the conversation rows are gone, each statement with a fresh snapshot: a batch that
-- held a deleted conversation's row lock has committed by then, so its messages go too.
CREATE FUNCTION "public"."conversations_delete_messages"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM "public"."messages" AS m USING old_conversations AS o WHERE m.conversation_id = o.id;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "conversations_delete_messages" AFTER DELETE ON "public"."conversations"
  REFERENCING OLD TABLE AS old_conversations
  FOR EACH STATEMENT EXECUTE FUNCTION "public"."conversations_delete_messages"();
--> statement-breakpoint
CREATE FUNCTION "public"."users_keep_senders"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM "public"."messages" AS m JOIN old_users AS o ON m.sender_id = o.id) THEN
    RAISE foreign_key_violation USING
      MESSAGE = 'delete on table "users" violates foreign key: the user sent messages',
      TABLE = 'messages', COLUMN = 'sender_id';
  END IF;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "users_keep_senders" AFTER DELETE ON "public"."users"
  REFERENCING OLD TABLE AS old_users
  FOR EACH STATEMENT EXECUTE FUNCTION "public"."users_keep_senders"();
