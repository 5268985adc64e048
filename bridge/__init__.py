"""SILMA telephony media bridge: Twilio/Plivo media streams spoken by SILMA TTS."""
